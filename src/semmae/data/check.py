"""``semmae data check``: scan a dataset before a long run - images per class, every unreadable file by path,
and the odd-but-valid images (grayscale, CMYK, 16-bit, alpha, palette, tiny/thin) that the loader converts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from semmae.data.folder import scan_image_folder
from semmae.data.images import open_for_check
from semmae.errors import BadImageError


@dataclass
class CheckReport:
    root: str
    per_class: dict[str, int] = field(default_factory=dict)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    unusual: Counter = field(default_factory=Counter)

    @property
    def num_images(self) -> int:
        return sum(self.per_class.values())

    def format(self) -> str:
        lines = [f"{self.root}: {self.num_images} images in {len(self.per_class)} classes"]
        lines += [f"  {name}: {n}" for name, n in self.per_class.items()]
        if self.unusual:
            kinds = ", ".join(f"{k}: {n}" for k, n in sorted(self.unusual.items()))
            lines.append(f"readable but converted to RGB ({kinds})")
        if self.unreadable:
            lines.append(f"{len(self.unreadable)} unreadable file(s):")
            lines += [f"  {p}: {why}" for p, why in self.unreadable]
        else:
            lines.append("all images readable")
        return "\n".join(lines)


def check_dataset(root: str | Path, progress: bool = True) -> CheckReport:
    """Decode every image under ``root`` (ImageFolder layout) and report what was found."""
    classes, samples = scan_image_folder(root)
    report = CheckReport(root=str(root), per_class={c: 0 for c in classes})
    for path, label in tqdm(samples, desc="check", disable=not progress):
        report.per_class[classes[label]] += 1
        try:
            _, kind = open_for_check(path)
        except BadImageError as e:
            report.unreadable.append((path, e.reason))
            continue
        if kind:
            report.unusual[kind] += 1
    return report
