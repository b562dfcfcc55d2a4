"""Batch crop/flip of packed data agrees with the per-image JointPartTransform geometry; the batched resample
equals one `interpolate` per box; `--num-workers auto`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from semmae.data.batch_augment import (
    BatchPartAugment,
    boxes_to_side,
    crop_flip_cells,
    decode_cells_torch,
    resized_crops,
    sample_crop_boxes,
)
from semmae.data.part_cache import encode_cells
from semmae.data.transforms import IMAGENET_MEAN, IMAGENET_STD, JointPartTransform

K = 3  # parts
# batched vs per-box float resample, in uint8 levels (0..255): float32 rounding only (measured: at most 2.8e-4 on
# noise images, 256 -> 224 px; matmul sums in another order than PyTorch's banded kernel)
BATCHED_ATOL = 1e-3


def per_box_interpolate(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """The slow reference: one ``F.interpolate`` (bicubic, antialiased) per box, in float."""
    crops = [
        F.interpolate(
            x[i : i + 1, :, t : t + h, left : left + w], size=(size, size), mode="bicubic", antialias=True
        )
        for i, (t, left, h, w) in enumerate(boxes.tolist())
    ]
    return torch.cat(crops)


class FixedGeometry:
    """JointPartTransform's ``geometry``: one given resized crop (+ flip), for image and map alike."""

    def __init__(self, box, flip: bool, size: int):
        self.box, self.flip, self.size = [int(v) for v in box], flip, size

    def __call__(self, img, maps):
        t, left, h, w = self.box
        out = [
            v2.functional.resized_crop(x, t, left, h, w, [self.size, self.size], antialias=True)
            for x in (img, maps)
        ]
        return tuple(v2.functional.horizontal_flip(x) for x in out) if self.flip else tuple(out)


def _batch(b: int, side: int, grid: int, seed: int = 0, smooth: bool = False):
    g = torch.Generator().manual_seed(seed)
    if smooth:  # a gentle gradient + blobs: interpolation filters agree closely on it
        yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        base = torch.stack([yy * 3, xx * 3, (yy + xx) * 2], -1).float()
        pixels = (base[None] + torch.rand(b, 1, 1, 3, generator=g) * 60).clamp(0, 255).to(torch.uint8)
    else:
        pixels = torch.randint(0, 256, (b, side, side, 3), dtype=torch.uint8, generator=g)
    part = torch.randint(0, K + 1, (b, grid, grid), generator=g)
    fg = torch.rand(b, grid, grid, generator=g)
    codes = torch.from_numpy(encode_cells(part.numpy(), fg.numpy(), K))
    return pixels, codes


@pytest.mark.parametrize("side,img,patch,grid", [(40, 16, 4, 5), (24, 24, 8, 3), (30, 16, 4, 4)])
def test_part_cells_equal_joint_transform_under_the_same_crop_and_flip(side, img, patch, grid):
    b = 48
    pixels, codes = _batch(b, side, grid)
    aug = BatchPartAugment(img, patch, side, scale=(0.08, 1.0), num_parts=K)
    boxes, flips = aug.params(torch.tensor([[side, side]] * b), torch.Generator().manual_seed(1))
    assert flips.any() and (~flips).any()
    part_b, fg_b = decode_cells_torch(crop_flip_cells(codes, boxes, flips, side, img, patch), K)
    for i in range(b):
        part, fg = decode_cells_torch(codes[i], K)
        joint = JointPartTransform(img, patch, geometry=FixedGeometry(boxes[i], bool(flips[i]), img))
        _, part_j, fg_j = joint(pixels[i].permute(2, 0, 1).contiguous(), part, fg)
        assert torch.equal(part_j, part_b[i]), i
        assert torch.equal(fg_j, fg_b[i]), i


@pytest.mark.parametrize("side,size", [(40, 16), (40, 48), (64, 56), (30, 30)])
def test_batched_resize_equals_one_interpolate_per_box(side, size):
    # noise images (the worst case for a filter mismatch), boxes shrunk (the antialias widens the kernel) and
    # enlarged, any aspect ratio, plus the whole image, a 1-pixel strip and boxes touching every border
    b = 40
    g = torch.Generator().manual_seed(side * size)
    x = torch.randint(0, 256, (b, 3, side, side), generator=g).float()
    aug = BatchPartAugment(size, 2, side, scale=(0.08, 1.0))
    boxes, _ = aug.params(torch.randint(20, 900, (b, 2), generator=g), g)
    boxes[:4] = torch.tensor(
        [[0, 0, side, side], [0, 3, side, 1], [side - 5, 0, 5, side], [2, side - 7, 9, 7]]
    )
    assert (boxes[:, 2:] < size).any() and ((boxes[:, 2:] > size).any() or side <= size)  # both directions
    out = resized_crops(x, boxes, size)
    torch.testing.assert_close(out, per_box_interpolate(x, boxes, size), atol=BATCHED_ATOL, rtol=0)
    # a box reads only its own pixels: huge values around it change nothing
    around = torch.full_like(x, -1e6)
    for i, (t, left, h, w) in enumerate(boxes.tolist()):
        around[i, :, t : t + h, left : left + w] = x[i, :, t : t + h, left : left + w]
    torch.testing.assert_close(resized_crops(around, boxes, size), out, atol=BATCHED_ATOL, rtol=0)


def test_batched_augment_keeps_images_and_part_cells_on_the_same_crop():
    side, img, patch, grid = 40, 16, 4, 4
    b = 24
    pixels, codes = _batch(b, side, grid, seed=3)
    sizes = torch.tensor([[300, 500]] * b)
    aug = BatchPartAugment(img, patch, side, scale=(0.08, 1.0), num_parts=K, batched=True)
    out = aug({"pixels": pixels, "codes": codes, "size": sizes}, torch.Generator().manual_seed(4))
    boxes, flips = aug.params(sizes, torch.Generator().manual_seed(4))  # the same draws, in the same order
    assert flips.any() and (~flips).any() and (boxes[:, 2:] != side).any()
    ref = per_box_interpolate(pixels.permute(0, 3, 1, 2).float(), boxes, img)
    ref = torch.where(flips[:, None, None, None], ref.flip(-1), ref)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    atol = BATCHED_ATOL / (255 * min(IMAGENET_STD)) + 1e-6  # + the normalisation's own rounding
    torch.testing.assert_close(out["image"], (ref / 255 - mean) / std, atol=atol, rtol=0)
    for i in range(b):  # the cells of the same boxes and flips, bit for bit
        part, fg = decode_cells_torch(codes[i], K)
        joint = JointPartTransform(img, patch, geometry=FixedGeometry(boxes[i], bool(flips[i]), img))
        _, part_j, fg_j = joint(pixels[i].permute(2, 0, 1).contiguous(), part, fg)
        assert torch.equal(out["part_ids"][i], part_j) and torch.equal(out["fg"][i], fg_j), i


@pytest.mark.parametrize("batched", [False, True])
def test_images_follow_the_same_crop_and_flip(batched):
    side, img = 32, 16
    b = 12
    pixels, codes = _batch(b, side, 4, smooth=True)
    aug = BatchPartAugment(img, 4, side, scale=(0.2, 1.0), num_parts=K, batched=batched)
    boxes, flips = aug.params(torch.tensor([[side, side]] * b), torch.Generator().manual_seed(2))
    boxes[0] = torch.tensor([3, 5, img, img])  # a crop at the output size: no resampling, exact
    out = aug.images(pixels, boxes, flips)
    for i in range(b):
        part, fg = decode_cells_torch(codes[i], K)
        joint = JointPartTransform(img, 4, geometry=FixedGeometry(boxes[i], bool(flips[i]), img))
        ref, _, _ = joint(pixels[i].permute(2, 0, 1).contiguous(), part, fg)
        tol = 1e-5 if i == 0 else 0.05  # same bicubic filter; uint8 rounding differs by at most ~1 level
        torch.testing.assert_close(out[i], ref, atol=tol, rtol=0, msg=str(i))


def test_flip_only_on_a_pack_at_the_training_side_is_exact():
    side = 16
    pixels, codes = _batch(6, side, 4)
    aug = BatchPartAugment(side, 4, side, scale=None, num_parts=K)
    res = aug(
        {"pixels": pixels, "codes": codes, "size": torch.tensor([[50, 70]] * 6)},
        torch.Generator().manual_seed(0),
    )
    boxes, flips = aug.params(torch.tensor([[50, 70]] * 6), torch.Generator().manual_seed(0))
    for i in range(6):
        part, fg = decode_cells_torch(codes[i], K)
        joint = JointPartTransform(side, 4, scale=None, hflip=False)
        img, p, f = joint(pixels[i].permute(2, 0, 1).contiguous(), part, fg)
        if flips[i]:
            img = img.flip(-1)
            p, f = p.view(4, 4).flip(-1).flatten(), f.view(4, 4).flip(-1).flatten()
        torch.testing.assert_close(res["image"][i], img, atol=1e-5, rtol=0)
        assert torch.equal(res["part_ids"][i], p) and torch.equal(res["fg"][i], f)


def test_crop_boxes_follow_random_resized_crop():
    n = 4000
    g = torch.Generator().manual_seed(0)
    h, w = torch.full((n,), 400), torch.full((n,), 400)  # square: the aspect ratios are symmetric
    boxes = sample_crop_boxes(h, w, (0.2, 1.0), generator=g)
    top, left, bh, bw = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + bh <= 400).all() and (left + bw <= 400).all()
    area = (bh * bw).double() / (400 * 400)
    assert area.min() >= 0.19 and area.max() <= 1.0 and 0.45 < area.mean() < 0.65
    ratio = (bw / bh).double()
    assert ratio.min() >= 3 / 4 - 0.02 and ratio.max() <= 4 / 3 + 0.02
    assert abs(ratio.log().mean().item()) < 0.03  # log-uniform around 1
    again = sample_crop_boxes(h, w, (0.2, 1.0), generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, boxes)
    # no try fits a very thin image: torchvision's fallback, the centred box with the ratio clamped
    thin = sample_crop_boxes(torch.tensor([1000]), torch.tensor([10]), (0.9, 1.0), generator=g)
    assert thin.tolist() == [[(1000 - 13) // 2, 0, 13, 10]]
    # moved to the packed square: inside it, proportional
    moved = boxes_to_side(boxes, h, w, 64)
    assert (moved[:, 0] + moved[:, 2] <= 64).all() and (moved[:, 1] + moved[:, 3] <= 64).all()
    assert (moved[:, 2:] >= 1).all()
    assert torch.allclose(moved[:, 2].double(), bh.double() * 64 / 400, atol=1)


@pytest.mark.parametrize("scale", [None, (0.2, 1.0)])
def test_a_batch_is_augmented_without_reading_device_values(scale):
    # on the meta device every value read (.item(), bool(t)) raises: the augmentation (the batched resample of
    # the crops included) and normalisation only queue device work, so on a GPU prepare() does not wait for the
    # previous step's kernels
    from semmae.data.transforms import normalize_batch

    aug = BatchPartAugment(32, 8, 32, scale=scale, hflip=True, num_parts=3)
    pixels = torch.empty(4, 32, 32, 3, dtype=torch.uint8, device="meta")
    codes = torch.empty(4, 8, 8, dtype=torch.uint8, device="meta")
    gen = torch.Generator().manual_seed(1)  # parameters are drawn on the CPU
    out = aug({"pixels": pixels, "codes": codes, "size": torch.tensor([[32, 32]] * 4)}, gen)
    assert out["image"].shape == (4, 3, 32, 32) and out["part_ids"].shape == (4, 16)
    assert normalize_batch(torch.empty(2, 3, 8, 8, dtype=torch.uint8, device="meta")).shape == (2, 3, 8, 8)


def test_normalize_batch_matches_torchvision_normalize_to_the_bit():
    from semmae.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize_batch

    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    ref = v2.functional.normalize(
        v2.functional.to_dtype(x, torch.float32, scale=True), IMAGENET_MEAN, IMAGENET_STD
    )
    assert torch.equal(normalize_batch(x), ref)
