"""Image transforms, and the joint image + part-map transform of SemMAE pretraining.

The part map travels with its image through the *same* geometric transform (torchvision ``transforms.v2``
with the map as a ``tv_tensors.Mask``, which v2 always resamples with nearest neighbour), so a pixel and its part
label stay aligned under RandomResizedCrop + flip (MAE's pretraining augmentation, He et al. 2022 Sec. 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_INTERPOLATION = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}


def _to_normalized_tensor() -> v2.Transform:
    return v2.Compose(
        [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )


def normalize_batch(pixels: torch.Tensor) -> torch.Tensor:
    """The one ImageNet normaliser of pixel batches: uint8 ``[B, 3, H, W]`` (or float holding 0..255 values, e.g.
    resampled uint8) -> float32 ``(x / 255 - mean) / std``, with the operations (and values, to the bit) of the
    per-image ``ToDtype(scale=True)`` + ``Normalize`` of the transforms, on a whole batch where it already is (the
    training process or the GPU): loader workers then send uint8, a quarter of the bytes, and skip the float work."""
    # ToDtype(float32, scale=True) on uint8 is x.to(float32) * (1 / 255); out of place, so a float input is kept
    x = pixels.to(torch.float32).mul(1.0 / 255)
    # torchvision's normalize (out of place, then in place) would copy mean/std from the host on every call
    mean, std = imagenet_constants(x.device)
    return x.sub_(mean.view(3, 1, 1)).div_(std.view(3, 1, 1))


_CONSTANTS: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def imagenet_constants(device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 ImageNet ``(mean [3], std [3])`` on ``device``, copied there once: a per-batch host-to-device copy
    of them is a blocking copy, which on a GPU waits for every queued kernel (the previous step's)."""
    device = torch.device(device)
    if device not in _CONSTANTS:
        _CONSTANTS[device] = (
            torch.tensor(IMAGENET_MEAN, dtype=torch.float32).to(device),
            torch.tensor(IMAGENET_STD, dtype=torch.float32).to(device),
        )
    return _CONSTANTS[device]


def train_transform(
    size: int,
    scale: tuple[float, float] | None = (0.2, 1.0),
    hflip: bool = True,
    interpolation: str = "bicubic",
    normalize: bool = True,
) -> v2.Transform:
    """MAE pretraining / linear-probe augmentation: RandomResizedCrop + horizontal flip + normalisation.

    ``scale=None``: no crop, the whole image is resized to ``size x size`` (SemMAE's flip-only pretraining).
    ``normalize=False``: a uint8 tensor, normalised later by :func:`normalize_batch`.
    """
    interp = _INTERPOLATION[interpolation]
    steps: list[v2.Transform] = [
        v2.RandomResizedCrop(size, scale=tuple(scale), interpolation=interp, antialias=True)
        if scale is not None
        else v2.Resize((size, size), interpolation=interp, antialias=True)
    ]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose([*steps, _to_normalized_tensor() if normalize else v2.ToImage()])


def eval_geometry(size: int, crop_pct: float = 0.875, interpolation: str = "bicubic") -> v2.Transform:
    """The evaluation view's geometry alone (a part map can go through it too): resize the short side to
    ``size / crop_pct``, center-crop ``size``."""
    resize = int(round(size / crop_pct))
    return v2.Compose(
        [
            v2.Resize(resize, interpolation=_INTERPOLATION[interpolation], antialias=True),
            v2.CenterCrop(size),
        ]
    )


def eval_transform(size: int, crop_pct: float = 0.875, interpolation: str = "bicubic") -> v2.Transform:
    """Evaluation: resize the short side to ``size / crop_pct`` then center-crop ``size`` (crop_pct 1 = no margin)."""
    return v2.Compose([eval_geometry(size, crop_pct, interpolation), _to_normalized_tensor()])


class JointPartTransform:
    """Crop/flip an image and its part map together and read the map off the model's patch grid.

    The cached map (``part_ids`` and foreground score ``fg``, both ``[G, G]`` over the whole image) is first
    stretched to the image's pixel size (nearest), then image and map go through one ``v2`` RandomResizedCrop +
    flip call, and finally the map is read at the centre pixel of every ``patch_size`` patch of the output.

    Args:
        img_size: output side S. patch_size: the model's patch p (L = (S / p)^2).
        scale: RandomResizedCrop area range (MAE: 0.2-1.0); ``scale=None`` means no crop (resize only).
        hflip: random horizontal flip. interpolation: for the image (the map always uses nearest).
        geometry: a v2 transform used instead of crop/flip (e.g. :func:`eval_geometry` for evaluation views);
            it must output ``img_size x img_size``.
        normalize: False = the image stays uint8 (normalised later, a batch at a time: :func:`normalize_batch`).

    Returns (from ``__call__(image, part_ids, fg)``): image float ``[3, S, S]`` normalised (uint8 with
    ``normalize=False``), part ids long ``[L]``, foreground float ``[L]``.
    """

    def __init__(
        self,
        img_size: int,
        patch_size: int,
        scale: tuple[float, float] | None = (0.2, 1.0),
        hflip: bool = True,
        interpolation: str = "bicubic",
        geometry: v2.Transform | None = None,
        normalize: bool = True,
    ):
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.img_size, self.patch_size = img_size, patch_size
        interp = _INTERPOLATION[interpolation]
        geometric: list[v2.Transform] = (
            [v2.RandomResizedCrop(img_size, scale=tuple(scale), interpolation=interp, antialias=True)]
            if scale is not None
            else [v2.Resize((img_size, img_size), interpolation=interp, antialias=True)]
        )
        if hflip:
            geometric.append(v2.RandomHorizontalFlip())
        self.geometric = v2.Compose(geometric) if geometry is None else geometry
        self.to_tensor = (
            v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
            if normalize
            else v2.Identity()
        )

    def __call__(
        self, image: Image.Image | torch.Tensor, part_ids: torch.Tensor, fg: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # a PIL image is resampled by PIL, as train_transform resamples one without a part map: the two arms of a
        # SemMAE-vs-MAE pair (one with a part cache, one without) then get the same pixels, not only the same crops
        pil = isinstance(image, Image.Image)
        img = image if pil else tv_tensors.Image(image)
        h, w = (image.height, image.width) if pil else img.shape[-2:]
        maps = torch.stack([part_ids.float(), fg.float()])[None]  # [1, 2, G, G]
        maps = tv_tensors.Mask(F.interpolate(maps, size=(h, w), mode="nearest")[0])
        img, maps = self.geometric(img, maps)
        if pil:
            img = tv_tensors.Image(v2.functional.pil_to_tensor(img))
        c = self.patch_size // 2
        cells = maps[:, c :: self.patch_size, c :: self.patch_size]  # [2, S/p, S/p]
        part = cells[0].round().long().flatten()
        return (
            self.to_tensor(img).as_subclass(torch.Tensor),
            part,
            cells[1].flatten().as_subclass(torch.Tensor),
        )
