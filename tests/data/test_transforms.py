import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2

from semmae.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    JointPartTransform,
    eval_transform,
    train_transform,
)


def _label_image(part_ids: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """An image whose red channel encodes the part id of each pixel (nearest upsampling of the grid)."""
    up = F.interpolate(part_ids[None, None].float(), size=(h, w), mode="nearest")[0, 0]
    img = torch.zeros(3, h, w, dtype=torch.uint8)
    img[0] = (up * 40).to(torch.uint8)
    img[1] = 7
    return img


def test_pixel_and_part_label_stay_aligned_after_crop_and_flip():
    torch.manual_seed(0)
    t = JointPartTransform(img_size=32, patch_size=4, scale=(0.2, 1.0), hflip=True, interpolation="nearest")
    mean, std = IMAGENET_MEAN[0], IMAGENET_STD[0]
    seen_flip_variety = set()
    for trial in range(20):
        part_ids = torch.randint(0, 6, (7, 7), dtype=torch.uint8)
        fg = torch.rand(7, 7)
        image = _label_image(part_ids, 50 + trial, 61)
        out, ids, fg_cells = t(image, part_ids, fg)
        assert out.shape == (3, 32, 32) and ids.shape == (64,) and fg_cells.shape == (64,)
        red = (out[0] * std + mean) * 255.0  # undo normalisation
        centres = red[2::4, 2::4].flatten()
        assert torch.allclose(centres, ids.float() * 40, atol=0.5), f"misaligned in trial {trial}"
        # the foreground score of a cell must belong to the same source cell as its part id
        pairs = {(int(p), round(float(f), 5)) for p, f in zip(part_ids.flatten(), fg.flatten())}
        assert all((int(p), round(float(f), 5)) in pairs for p, f in zip(ids, fg_cells))
        seen_flip_variety.add(tuple(ids[:4].tolist()))
    assert len(seen_flip_variety) > 5  # the transform is random


def test_eval_transform_shape():
    img = torch.randint(0, 255, (3, 40, 60), dtype=torch.uint8)
    assert eval_transform(32)(img).shape == (3, 32, 32)


def _two_halves(h: int, w: int) -> torch.Tensor:
    """Left half red, right half blue, plus a horizontal ramp in green: any mirror image differs from it."""
    img = torch.zeros(3, h, w, dtype=torch.uint8)
    img[0, :, : w // 2] = 220
    img[2, :, w // 2 :] = 220
    img[1] = torch.linspace(0, 250, w).round().to(torch.uint8)
    return img


def test_flip_only_resizes_the_whole_image_and_mirrors_the_part_map_with_it():
    """scale=None (``--augment flip``): no crop, the whole 48x64 image is resized to 32x32 and maybe mirrored;
    the part ids / fg read off the 8x8 patch grid are the 4x4 cache's (each cell covers 2x2 patches), mirrored
    exactly when the image is."""
    torch.manual_seed(0)
    size, patch = 32, 4
    image = _two_halves(48, 64)  # 3:4, so any crop (even a full-area one) would drop pixels
    part_ids = (10 * torch.arange(4)[:, None] + torch.arange(4)[None, :] + 1).to(
        torch.uint8
    )  # distinct per cell
    fg = torch.linspace(0, 1, 16).view(4, 4)
    cells = lambda m: m.repeat_interleave(2, 0).repeat_interleave(2, 1)  # noqa: E731  4x4 cache -> 8x8 grid
    resized = v2.functional.resize(
        tv_tensors.Image(image), [size, size], interpolation=InterpolationMode.BICUBIC, antialias=True
    )
    t = JointPartTransform(size, patch, scale=None, hflip=True)
    want = t.to_tensor(resized).as_subclass(torch.Tensor)
    seen = set()
    for _ in range(16):
        out, ids, fg_cells = t(image, part_ids, fg)
        flipped = not torch.allclose(out, want, atol=1e-5)
        if flipped:
            assert torch.allclose(out, want.flip(-1), atol=1e-5)
        mirror = (lambda m: m.flip(-1)) if flipped else (lambda m: m)
        assert torch.equal(ids.view(8, 8), mirror(cells(part_ids.long())))
        assert torch.allclose(fg_cells.view(8, 8), mirror(cells(fg)))
        seen.add(flipped)
    assert seen == {False, True}  # both outcomes happened, each with its matching part map
    still = JointPartTransform(size, patch, scale=None, hflip=False)
    for _ in range(4):
        out, ids, _ = still(image, part_ids, fg)
        assert torch.allclose(out, want, atol=1e-5) and torch.equal(ids.view(8, 8), cells(part_ids.long()))


def test_image_only_train_transform_without_scale_is_resize_and_flip():
    torch.manual_seed(0)
    image = _two_halves(48, 64)
    resized = v2.functional.resize(
        tv_tensors.Image(image), [32, 32], interpolation=InterpolationMode.BICUBIC, antialias=True
    )
    want = JointPartTransform(32, 4, scale=None).to_tensor(resized).as_subclass(torch.Tensor)
    t = train_transform(32, scale=None, hflip=True)
    seen = set()
    for _ in range(16):
        out = t(image)
        flipped = not torch.allclose(out, want, atol=1e-5)
        assert torch.allclose(out, want.flip(-1) if flipped else want, atol=1e-5)
        seen.add(flipped)
    assert seen == {False, True}


def test_normalize_batch_equals_the_per_image_transform_to_the_bit():
    """Pretraining's loader sends uint8 and normalises a batch at a time; the values must not change."""
    from semmae.data.transforms import _to_normalized_tensor, normalize_batch

    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8, generator=g)
    per_image = torch.stack([_to_normalized_tensor()(x) for x in imgs]).as_subclass(torch.Tensor)
    assert torch.equal(normalize_batch(imgs), per_image)
    assert not torch.equal(normalize_batch(imgs.flip(-1)), per_image)  # the check can fail
    t = train_transform(8, scale=None, hflip=False, normalize=False)
    out = t(tv_tensors.Image(imgs[0]))
    assert out.dtype == torch.uint8 and torch.equal(out.as_subclass(torch.Tensor), imgs[0])
