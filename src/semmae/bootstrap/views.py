"""Multi-crop views and iBOT's patch masks (DINO, Caron et al. 2021, Sec. 3.1 and App. B; iBOT, Zhou et al. 2022).

* :class:`MultiCropTransform`: 2 global crops (RandomResizedCrop over ``global_scale``) and ``n`` local crops
  (``local_scale``), each flipped and colour-jittered; BYOL's asymmetric blur (always on global crop 1, 10 % on
  global crop 2, 50 % on the locals) and solarisation (20 % on global crop 2). Blur sigmas are DINO's 0.1-2 px
  *at 224 px*, scaled to the crop size, so a 48 px crop is not blurred four times harder than a 224 px one.
* :func:`random_patch_masks`: per global crop, with probability ``mask_prob`` a random share in ``ratio`` of its
  patches is masked (iBOT's ``--pred_shape rand``; its default draws blocks instead). Drawn from a generator the
  engine seeds per (seed, step, shard), so masks never depend on the world size.
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode, v2

from semmae.data.transforms import _to_normalized_tensor


def _blur(size: int, p: float) -> v2.Transform:
    s = size / 224
    sigma = (0.1 * s, 2.0 * s)
    kernel = 2 * int(3 * sigma[1] + 0.5) + 1  # odd, covers +-3 sigma
    return v2.RandomApply([v2.GaussianBlur(kernel, sigma=sigma)], p=p)


def _view(size: int, scale: tuple[float, float], blur_p: float, solarize_p: float) -> v2.Transform:
    steps: list[v2.Transform] = [
        v2.RandomResizedCrop(
            size, scale=tuple(scale), interpolation=InterpolationMode.BICUBIC, antialias=True
        ),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        _blur(size, blur_p),
    ]
    if solarize_p > 0:
        steps.append(v2.RandomSolarize(128, p=solarize_p))
    return v2.Compose([*steps, _to_normalized_tensor()])


class MultiCropTransform:
    """PIL image -> ``{"global": float [2, 3, S, S], "local": float [n, 3, s, s]}`` (ImageNet-normalised; with
    ``n = 0`` the ``local`` entry is ``[0, 3, s, s]``)."""

    def __init__(
        self,
        global_size: int,
        local_size: int,
        local_crops: int,
        global_scale: tuple[float, float] = (0.25, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.25),
    ):
        self.global_views = [
            _view(global_size, global_scale, blur_p=1.0, solarize_p=0.0),
            _view(global_size, global_scale, blur_p=0.1, solarize_p=0.2),
        ]
        self.local_view = _view(local_size, local_scale, blur_p=0.5, solarize_p=0.0)
        self.local_crops, self.local_size = int(local_crops), int(local_size)

    def __call__(self, img: Image.Image) -> dict[str, Tensor]:
        g = torch.stack([t(img) for t in self.global_views])
        if self.local_crops:
            loc = torch.stack([self.local_view(img) for _ in range(self.local_crops)])
        else:
            loc = torch.empty(0, 3, self.local_size, self.local_size)
        return {"global": g, "local": loc}


def random_patch_masks(
    n: int,
    num_patches: int,
    mask_prob: float,
    ratio: tuple[float, float],
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> Tensor:
    """bool ``[n, num_patches]`` (True = masked): row i is masked with probability ``mask_prob``, then exactly
    ``round(r_i * num_patches)`` random patches with ``r_i ~ U(ratio)``."""
    u = torch.rand(n, generator=generator, device=device)
    r = torch.empty(n, device=device).uniform_(ratio[0], ratio[1], generator=generator)
    count = torch.where(u < mask_prob, torch.round(r * num_patches), torch.zeros_like(r)).long()
    noise = torch.rand(n, num_patches, generator=generator, device=device)
    rank = noise.argsort(dim=1).argsort(dim=1)  # rank of each patch's noise within its row
    return rank < count.unsqueeze(1)
