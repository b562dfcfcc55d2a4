"""Crop and flip whole batches as tensor ops (on the GPU when there is one), part maps included.

The packed-data path of pretraining (:mod:`semmae.data.packed`) hands the engine uint8 images that were decoded
once, at a fixed side, together with their part-cache cells. This module applies the pretraining augmentation to a
whole batch at once, with the same geometry as the per-image
:class:`~semmae.data.transforms.JointPartTransform`:

* ``--augment crop-flip`` (MAE, He et al. 2022): a RandomResizedCrop box per image, drawn as torchvision's
  ``RandomResizedCrop.get_params`` draws it (area ``scale``, log-uniform aspect ratio, ten tries, then a centre
  crop) in the frame of the image *as it was on disk*, then moved to the packed square; each box is resampled
  to ``img_size`` (bicubic, antialiased, as the per-image path), then flipped. On the CPU each box goes through
  PyTorch's uint8 kernel; on a GPU the whole batch is resampled at once by two batched matrix products
  (:func:`resized_crops`, the same filter as a rows-times-columns matrix per image) instead of one
  ``interpolate`` per image.
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


# Keys' cubic convolution parameter of PyTorch's (and PIL's) antialiased bicubic filter; plain bicubic
# (``antialias=False``, ``grid_sample``) uses -0.75, so neither reproduces ``interpolate(..., antialias=True)``.
AA_CUBIC_A = -0.5
CUBIC_SUPPORT = 2.0  # the cubic kernel is zero from |x| = 2 on


def _keys_cubic(x: torch.Tensor, a: float = AA_CUBIC_A) -> torch.Tensor:
    """Keys' cubic convolution kernel at ``x`` (distances in output-pixel units)."""
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < CUBIC_SUPPORT, far, 0.0))


def resize_matrices(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int) -> torch.Tensor:
    """One axis of ``F.interpolate(crop, mode="bicubic", antialias=True)`` as a matrix per image.

    Row ``i`` of image ``b`` holds the weights with which output pixel ``i`` reads the input pixels of the segment
    ``[start[b], start[b] + length[b])`` of an axis of ``in_size`` pixels (zero outside it), resampled to
    ``out_size`` pixels with PyTorch's arithmetic (``align_corners=False``): output pixel ``i`` is centred at
    ``c = (i + 0.5) * scale`` in the segment, ``scale = length / out_size``; input pixel ``p`` gets
    ``cubic((p + 0.5 - c) / max(scale, 1))`` - the kernel widened by the scale when shrinking (the antialias) -
    and each row is normalised to sum 1.

    Args:
        start, length: long ``[B]`` on the device where the matrices are wanted.

    Returns:
        float ``[B, out_size, in_size]``.
    """
    scale = (length.float() / out_size)[:, None, None]
    stretch = scale.clamp(min=1.0)
    centre = scale * (torch.arange(out_size, device=start.device, dtype=torch.float32)[None, :, None] + 0.5)
    p = torch.arange(in_size, device=start.device)[None, None, :] - start[:, None, None]  # within the segment
    w = _keys_cubic((p + 0.5 - centre) / stretch)
    w = w * ((p >= 0) & (p < length[:, None, None]))
    return w / w.sum(-1, keepdim=True)


def resized_crops(x: torch.Tensor, boxes: torch.Tensor, out_size: int) -> torch.Tensor:
    """Every image's box resized to ``out_size`` (bicubic, antialiased) by two batched matrix products.

    Equal, up to float32 rounding, to ``F.interpolate(x[b:b+1, :, t:t+h, l:l+w], (out_size, out_size),
    mode="bicubic", antialias=True)`` per image (tested), in a fixed number of kernels whatever the batch:
    ``Wy @ x @ Wx^T`` with :func:`resize_matrices` (width first, as PyTorch's separable kernel). It spends
    ``side / taps`` times the multiply-adds of the banded filter - little for a GPU, slow on a CPU core - and
    float32 matmuls on a GPU run in TF32 where the run allows it (``--precision auto``/``fp32``), which moves
    values by a fraction of a uint8 level. Nothing is clamped, like ``interpolate`` on float input.

    Args:
        x: float ``[B, C, H, W]``. boxes: long ``[B, 4]`` ``(top, left, h, w)`` inside ``H x W``, on ``x``'s device.

    Returns:
        float ``[B, C, out_size, out_size]``.
    """
    b, height, width = x.shape[0], x.shape[-2], x.shape[-1]
    # both axes' matrices in one go (half the small kernels): tops then lefts
    both = resize_matrices(
        boxes[:, :2].T.reshape(-1), boxes[:, 2:].T.reshape(-1), max(height, width), out_size
    )
    rows, cols = both[:b, :, :height], both[b:, :, :width]  # [B, S, H], [B, S, W]
    return rows[:, None] @ (x @ cols.transpose(1, 2)[:, None])


def crops_one_by_one(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """One antialiased bicubic ``interpolate`` per box (the CPU path: on uint8 channels-last pixels, PyTorch's
    vectorised uint8 kernel, which rounds and clamps to 0..255 after each axis; elsewhere float, as CUDA has no
    uint8 kernel). ``x``: ``[B, C, H, W]``; ``boxes``: long ``[B, 4]`` on the CPU. Returns ``[B, C, size, size]``."""
    on_cpu = x.device.type == "cpu"
    x = x if on_cpu else x.float()
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=x.dtype, device=x.device)
    if on_cpu:
        out = out.contiguous(memory_format=torch.channels_last)
    for i, (t, left, h, w) in enumerate(boxes.tolist()):
        crop = x[i : i + 1, :, t : t + h, left : left + w]
        out[i : i + 1] = F.interpolate(crop, size=(size, size), mode="bicubic", antialias=True)
    return out


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
        batched: resample all boxes at once (:func:`resized_crops`) rather than one ``interpolate`` per box;
            None = on every device but the CPU, where the per-box uint8 kernel is much faster than the dense
            batched products and no kernel launches are saved.

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
        batched: bool | None = None,
    ):
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.img_size, self.patch_size, self.side = img_size, patch_size, side
        self.scale, self.hflip, self.num_parts = scale, hflip, num_parts
        self.batched = batched

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

        Each box is resized with bicubic antialiased interpolation (the per-image path's filter): box by box on
        uint8 channels-last pixels on the CPU (PyTorch's vectorised uint8 kernel), the whole batch at once in
        float elsewhere (:func:`resized_crops`; see ``batched``). Nothing is resampled when the box is the whole
        image and the pack is at the output side (``--augment flip``). ``boxes`` and ``flips`` live on the CPU.
        """
        s, side = self.img_size, self.side
        # boxes and flips are CPU tensors: reading them waits for no device
        whole = bool((boxes[:, 2] == side).all() and (boxes[:, 3] == side).all())
        x = pixels.permute(0, 3, 1, 2)  # [B, 3, side, side], channels-last in memory
        if not (whole and side == s):
            batched = self.batched if self.batched is not None else x.device.type != "cpu"
            if batched:
                x = resized_crops(x.float(), _to(boxes, x.device), s)
            else:
                x = crops_one_by_one(x, boxes, s)
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
