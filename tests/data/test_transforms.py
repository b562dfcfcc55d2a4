import torch
import torch.nn.functional as F

from semmae.data.transforms import IMAGENET_MEAN, IMAGENET_STD, JointPartTransform, eval_transform


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
