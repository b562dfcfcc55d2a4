"""The lab's small pieces on real files and tensors: subsets, the probes on saved features, the part tables."""

from __future__ import annotations

import torch
from _helpers import write_image_folder

from semmae_lab.probes import knn_probe, logistic_probe
from semmae_lab.subsets import split_subset
from semmae_lab.tables import mean_std, part_table, part_wins


def test_split_subset_keeps_per_class_images_or_the_whole_split(tmp_path):
    src = write_image_folder(tmp_path / "src", classes=("a", "b"), per_class=5, size=8)
    sub = split_subset(src, tmp_path / "sub", 2)
    assert sorted(len(list(d.iterdir())) for d in sub.iterdir() if d.is_dir()) == [2, 2]
    assert split_subset(src, tmp_path / "all", 0) == src
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / ".complete").write_text("")  # made by the harness before the library owned subsets: reused
    assert split_subset(src, legacy, 2) == legacy and not any(p.is_dir() for p in legacy.iterdir())


def _features(separable: bool) -> dict:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(20)
    centres = torch.eye(3, 8) * (10.0 if separable else 0.0)
    x = centres[labels] + torch.randn(60, 8, generator=g)
    return {
        "train_x": x[::2],
        "train_y": labels[::2],
        "val_x": x[1::2],
        "val_y": labels[1::2],
        "classes": list("abc"),
    }


def test_probes_on_saved_features_separate_separable_classes_only():
    easy, noise = _features(True), _features(False)
    assert knn_probe(easy)["top1"] == 100.0 and knn_probe(noise)["top1"] < 80.0
    top1, converged = logistic_probe(easy)
    assert top1 == 100.0 and converged
    assert logistic_probe(noise)[0] < 80.0
    assert logistic_probe(easy, max_iter=1)[1] is False  # stopped by the cap: reported, not hidden


def test_part_tables_average_over_seeds_and_count_paired_wins():
    runs = [
        {"learned": {"nmi": 0.5}, "spatial": {"nmi": 0.3}},
        {"learned": {"nmi": 0.7}, "spatial": {"nmi": 0.8}},
    ]
    assert mean_std([0.5, 0.7], 3) == "0.600 ± 0.141" and mean_std([1.0]) == "1.00" and mean_std([]) == "n/a"
    table = part_table(runs, ["nmi"])
    assert "| learned | 0.600 ± 0.141 |" in table and "attention" not in table
    assert "| spatial | 1/2 (+0.050) |" in part_wins(runs, ["nmi"])
