"""Crop and flip whole batches as tensor ops (on the GPU when there is one), part maps included.

The packed-data path of pretraining (:mod:`semmae.data.packed`) hands the engine uint8 images that were decoded
once, at a fixed side, together with their part-cache cells. This module applies the pretraining augmentation to a
whole batch at once, with the same geometry as the per-image
:class:`~semmae.data.transforms.JointPartTransform`:

* ``--augment crop-flip`` (MAE, He et al. 2022): a RandomResizedCrop box per image, drawn as torchvision's
  ``RandomResizedCrop.get_params`` draws it (area ``scale``, log-uniform aspect ratio, ten tries, then a centre
  crop) in the frame of the image *as it was on disk*, then moved to the packed square; each box is resampled
  to ``img_size`` (bicubic, antialiased, as the per-image path), then flipped.
* ``--augment flip`` (SemMAE, paper Sec. 4.1): the whole image, resized to ``img_size`` (nothing to do when the
  pack was made at that side), then flipped.

The part map goes through the same box and flip with nearest-neighbour sampling, read at the centre pixel of every
patch, with exactly the arithmetic ``JointPartTransform`` performs through ``transforms.v2`` (stretch the G x G map
to the image, crop + resize with nearest, flip, read the patch centres) - so the cells agree bit for bit (tested).

The random parameters of a micro-batch come from a CPU generator the engine seeds with ``(seed, step, shard)``,
like the masks, so a run gives the same crops on a CPU and a GPU, and with any number of ranks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from semmae.data.part_cache import _bits as cell_bits
from semmae.data.transforms import normalize_batch


def sample_crop_boxes(
    heights: torch.Tensor,
    widths: torch.Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    tries: int = 10,
) -> torch.Tensor:
    """RandomResizedCrop boxes for a batch, drawn as ``torchvision`` draws them for one image.

    Args:
        heights, widths: long ``[B]``, the frame each box is drawn in (the image as it was on disk).
        scale: area range; ratio: aspect-ratio range (log-uniform); tries: draws before the centre-crop fallback.

    Returns:
        long ``[B, 4]``: ``(top, left, height, width)`` in that frame.
    """
    b = heights.shape[0]
    h_img, w_img = heights.double()[:, None], widths.double()[:, None]
    area = h_img * w_img
    target = area * torch.empty(b, tries, dtype=torch.float64).uniform_(
        scale[0], scale[1], generator=generator
    )
    log_r = torch.empty(b, tries, dtype=torch.float64).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=generator
    )
    aspect = torch.exp(log_r)
    w = torch.sqrt(target * aspect).round()
    h = torch.sqrt(target / aspect).round()
    ok = (w > 0) & (w <= w_img) & (h > 0) & (h <= h_img)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((b,), -1))
    u = torch.rand(b, 2, dtype=torch.float64, generator=generator)

    # fallback (no try fitted): the largest centred box with the ratio clamped to the range
    in_ratio = widths.double() / heights.double()
    fw = torch.where(
        in_ratio < ratio[0],
        widths.double(),
        torch.where(in_ratio > ratio[1], (heights.double() * ratio[1]).round(), widths.double()),
    )
    fh = torch.where(in_ratio < ratio[0], (widths.double() / ratio[0]).round(), heights.double())
    pick = first.clamp(min=0)[:, None]
    hh = torch.where(first >= 0, h.gather(1, pick)[:, 0], fh)
    ww = torch.where(first >= 0, w.gather(1, pick)[:, 0], fw)
    # randint(0, H - h + 1) for a drawn box; the centre for the fallback
    top = torch.where(
        first >= 0, (u[:, 0] * (heights.double() - hh + 1)).floor(), ((heights.double() - hh) / 2).floor()
    )
    left = torch.where(
        first >= 0, (u[:, 1] * (widths.double() - ww + 1)).floor(), ((widths.double() - ww) / 2).floor()
    )
    return torch.stack([top, left, hh, ww], 1).long()


def boxes_to_side(
    boxes: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor, side: int
) -> torch.Tensor:
    """Move ``(top, left, h, w)`` boxes from each image's own frame to the packed ``side x side`` square
    (integer pixels, at least 1 pixel, inside the square)."""
    sy = side / heights.double()
    sx = side / widths.double()
    h = (boxes[:, 2].double() * sy).round().clamp(1, side)
    w = (boxes[:, 3].double() * sx).round().clamp(1, side)
    top = (boxes[:, 0].double() * sy).round().clamp(min=0)
    left = (boxes[:, 1].double() * sx).round().clamp(min=0)
    top = torch.minimum(top, side - h)
    left = torch.minimum(left, side - w)
    return torch.stack([top, left, h, w], 1).long()


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor (boxes, flips) to ``device`` without a host sync: a non-blocking copy, which from
    pageable memory is staged at once and queued behind the device's work instead of waiting for it."""
    return t.to(device, non_blocking=True)


def _nearest_src(dst: torch.Tensor, in_size: torch.Tensor | int, out_size: int) -> torch.Tensor:
    """PyTorch's ``interpolate(mode="nearest")`` source index: ``floor(dst * float32(in / out))``, in float32."""
    scale = torch.as_tensor(in_size, dtype=torch.float32) / out_size
    return (dst.float() * scale).floor().long()


def crop_flip_cells(
    codes: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor, side: int, img_size: int, patch_size: int
) -> torch.Tensor:
    """The part-cache cells under each patch centre of the augmented image.

    Args:
        codes: ``[B, G, G]`` cells over the whole packed image (any dtype; gathered, not interpolated).
        boxes: long ``[B, 4]`` ``(top, left, h, w)`` in the packed ``side x side`` frame. flips: bool ``[B]``.

    Returns:
        ``[B, L]`` cells, ``L = (img_size / patch_size) ** 2``, row-major over the patch grid.
    """
    b, g = codes.shape[0], codes.shape[-1]
    dev = codes.device
    centres = torch.arange(patch_size // 2, img_size, patch_size, device=dev)  # [n]
    n = centres.shape[0]
    top, left, h, w = (_to(boxes[:, k], dev)[:, None] for k in range(4))
    x = torch.where(_to(flips, dev)[:, None], img_size - 1 - centres[None], centres[None])  # after the flip
    # crop + resize (nearest) back to the packed frame, then the stretched G x G map (nearest)
    src_y = top + _nearest_src(centres[None].expand(b, n), h.float(), img_size)
    src_x = left + _nearest_src(x, w.float(), img_size)
    cy = _nearest_src(src_y, g, side).clamp(max=g - 1)
    cx = _nearest_src(src_x, g, side).clamp(max=g - 1)
    flat = codes.reshape(b, g * g)
    idx = (cy[:, :, None] * g + cx[:, None, :]).reshape(b, n * n)
    return flat.gather(1, idx)


class BatchPartAugment:
    """Pretraining augmentation of a packed batch: uint8 pixels + part cells in, model inputs out.

    Args:
        img_size, patch_size: the model's input side and patch. side: the packed images' side.
        scale: RandomResizedCrop area range (``--augment crop-flip``), or None for resize-only (``flip``).
        hflip: random horizontal flip. num_parts: the pack's part count (to decode its cells), None = no parts.

    ``__call__(batch, generator)`` takes ``{"pixels" uint8 [B, side, side, 3], "size" long [B, 2] (h, w on
    disk), "codes" uint8 [B, G, G] (optional)}`` on any device and returns ``{"image" float [B, 3, S, S]
    (ImageNet-normalised), "part_ids" long [B, L], "fg" float [B, L]}`` (the last two with codes) on that device.
    """

    def __init__(
        self,
        img_size: int,
        patch_size: int,
        side: int,
        scale: tuple[float, float] | None = (0.2, 1.0),
        hflip: bool = True,
        num_parts: int | None = None,
    ):
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.img_size, self.patch_size, self.side = img_size, patch_size, side
        self.scale, self.hflip, self.num_parts = scale, hflip, num_parts

    def params(
        self, sizes: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(boxes long [B, 4] in the packed frame, flips bool [B])`` for a batch (drawn on the CPU)."""
        sizes = sizes.cpu().long()
        b = sizes.shape[0]
        if self.scale is None:
            boxes = torch.tensor([[0, 0, self.side, self.side]]).expand(b, 4)
        else:
            boxes = sample_crop_boxes(sizes[:, 0], sizes[:, 1], self.scale, generator=generator)
            boxes = boxes_to_side(boxes, sizes[:, 0], sizes[:, 1], self.side)
        flips = torch.rand(b, generator=generator) < 0.5 if self.hflip else torch.zeros(b, dtype=torch.bool)
        return boxes, flips

    def images(self, pixels: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, side, side, 3]`` -> normalised float ``[B, 3, S, S]`` through the boxes and flips.

        Each box is resized with bicubic antialiased interpolation (the per-image path's filter): on uint8
        channels-last pixels on the CPU (PyTorch's vectorised uint8 kernel), in float on a GPU. Nothing is
        resampled when the box is the whole image and the pack is at the output side (``--augment flip``).
        """
        s, side = self.img_size, self.side
        whole = bool((boxes[:, 2] == side).all() and (boxes[:, 3] == side).all())
        x = pixels.permute(0, 3, 1, 2)  # [B, 3, side, side], channels-last in memory
        if not (whole and side == s):
            on_cpu = x.device.type == "cpu"
            src = x if on_cpu else x.float()
            out = torch.empty((x.shape[0], 3, s, s), dtype=src.dtype, device=x.device)
            if on_cpu:
                out = out.contiguous(memory_format=torch.channels_last)
            for i, (t, left, h, w) in enumerate(boxes.tolist()):
                crop = src[i : i + 1, :, t : t + h, left : left + w]
                out[i : i + 1] = F.interpolate(crop, size=(s, s), mode="bicubic", antialias=True)
            x = out
        if bool(flips.any()):  # flips live on the CPU: no device sync
            fl = _to(flips, x.device)
            x = torch.where(fl[:, None, None, None], x.flip(-1), x)
        return normalize_batch(x)

    def __call__(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        boxes, flips = self.params(batch["size"], generator)
        out = {"image": self.images(batch["pixels"], boxes, flips)}
        if "codes" in batch and self.num_parts is not None:
            cells = crop_flip_cells(batch["codes"], boxes, flips, self.side, self.img_size, self.patch_size)
            part, fg = decode_cells_torch(cells, self.num_parts)
            out["part_ids"], out["fg"] = part, fg
        return out


def decode_cells_torch(codes: torch.Tensor, num_parts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~semmae.data.part_cache.decode_cells` on a tensor, on its device: ``(part_ids long, fg float)``."""
    _, fg_bits = cell_bits(num_parts)
    c = codes.long()
    levels = (1 << fg_bits) - 1
    return c >> fg_bits, (c & levels).float() / levels
