"""What a mask hides, part by part, along the adaptive schedule (paper Sec. 3.2, Algorithm 1): a diagnostic.

For a part cache and the training setting (``--fg-keep``, mask ratio, gamma) it builds the masks the library
builds at several points of training, with random masking beside them, and counts per image: the parts among the
cells the encoder sees, how many of them the mask hides whole, how many stay visible, and the share of the
visible cells that the largest visible part holds. It reads no images and trains nothing (seconds on a CPU).

    python benchmarks/masking_anatomy.py CACHE [CACHE ...] [--fg-keep 0.25] [--images 3000] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from semmae.data.part_cache import PartCache
from semmae.masking import build_masking, foreground_keep_index
from semmae_lab.results_table import markdown_table

#: points of training (step / total steps) to look at; 0.71 is where alpha = progress^2 passes 0.5
PROGRESS = (0.0, 0.25, 0.5, 0.71, 0.85, 1.0)


def load(cache_path: Path, images: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The first ``images`` images' part ids and foreground scores ``[N, G*G]``, and the "no part" id."""
    cache = PartCache.open(cache_path)
    n = min(images, len(cache))
    ids, fg = zip(*(cache[i] for i in range(n)))
    return torch.stack(ids).long().flatten(1), torch.stack(fg).float().flatten(1), cache.num_parts


def anatomy(part_ids: torch.Tensor, mask: torch.Tensor, no_part: int) -> dict[str, float]:
    """Mean over images of: parts present, parts hidden whole, parts left visible, largest visible part's share."""
    groups = no_part + 1
    present = torch.zeros(part_ids.shape[0], groups).scatter_add_(
        1, part_ids, torch.ones_like(part_ids, dtype=torch.float)
    )
    visible = torch.zeros_like(present).scatter_add_(1, part_ids, (~mask).float())
    parts_present, parts_visible = present[:, :no_part] > 0, visible[:, :no_part] > 0
    return {
        "parts present": parts_present.sum(1).float().mean().item(),
        "hidden whole": (parts_present & ~parts_visible).sum(1).float().mean().item(),
        "left visible": parts_visible.sum(1).float().mean().item(),
        "largest visible share": (visible.max(1).values / visible.sum(1).clamp(min=1)).mean().item(),
    }


def rows_for(cache_path: Path, args: argparse.Namespace) -> list[list]:
    part_ids, fg, no_part = load(cache_path, args.images)
    g = torch.Generator().manual_seed(args.seed)
    if args.fg_keep < 1:
        keep = foreground_keep_index(fg, args.fg_keep, generator=g)
        part_ids, fg = part_ids.gather(1, keep), fg.gather(1, keep)
    batch, length = part_ids.shape
    rows = []
    for name in ("random", "adaptive"):
        strategy = build_masking(name, mask_ratio=args.mask_ratio, gamma=args.gamma)
        for p in PROGRESS if name == "adaptive" else (0.0,):
            mask = strategy(batch, length, p, g, part_ids=part_ids, fg=fg, no_part_id=no_part)
            a = anatomy(part_ids, mask, no_part)
            alpha = strategy.alpha(p)
            rows.append(
                [cache_path.name, name, p if name == "adaptive" else "-", "-" if alpha is None else alpha]
                + [a[k] for k in ("parts present", "hidden whole", "left visible", "largest visible share")]
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("caches", nargs="+", type=Path, help="part caches (semmae parts export / --source masks)")
    ap.add_argument(
        "--fg-keep",
        type=float,
        default=1.0,
        help="keep the most-foreground share first (0.25: patch-8 setting)",
    )
    ap.add_argument("--mask-ratio", type=float, default=0.75)
    ap.add_argument("--gamma", type=float, default=2.0)
    ap.add_argument("--images", type=int, default=3000, help="the first N images of each cache")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="also write the table here (markdown)")
    args = ap.parse_args(argv)
    rows = [r for c in args.caches for r in rows_for(c, args)]
    head = [
        "cache",
        "masking",
        "progress",
        "alpha",
        "parts present",
        "hidden whole",
        "left visible",
        "largest visible share",
    ]
    table = markdown_table(head, rows)
    print(table)
    if args.out:
        args.out.write_text(
            f"`python benchmarks/masking_anatomy.py {' '.join(sys.argv[1:]) if argv is None else ' '.join(argv)}`\n\n"
            f"{table}\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
