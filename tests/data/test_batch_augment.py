"""Batch crop/flip of packed data agrees with the per-image JointPartTransform geometry; `--num-workers auto`."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from semmae.data.batch_augment import (
    BatchPartAugment,
    boxes_to_side,
    crop_flip_cells,
    decode_cells_torch,
    sample_crop_boxes,
)
from semmae.data.part_cache import encode_cells
from semmae.data.transforms import JointPartTransform

K = 3  # parts


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


def test_images_follow_the_same_crop_and_flip():
    side, img = 32, 16
    b = 12
    pixels, codes = _batch(b, side, 4, smooth=True)
    aug = BatchPartAugment(img, 4, side, scale=(0.2, 1.0), num_parts=K)
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


def test_a_batch_is_augmented_without_reading_device_values():
    # on the meta device every value read (.item(), bool(t)) raises: the augmentation and normalisation only
    # queue device work, so on a GPU prepare() does not wait for the previous step's kernels
    from semmae.data.transforms import normalize_batch

    aug = BatchPartAugment(32, 8, 32, scale=None, hflip=True, num_parts=3)
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
