"""Segmentation metrics from an accumulated confusion matrix (the ADE20K protocol behind paper Table 7).

The confusion matrix ``C [K, K]`` counts pixels with ground truth ``i`` (row) predicted as ``j`` (column); pixels
whose label is the ignore index are left out. From it, per class ``k``:

- IoU_k = C_kk / (sum_j C_kj + sum_i C_ik - C_kk)      (NaN when the class is neither in the labels nor predicted)
- Acc_k = C_kk / sum_j C_kj                             (NaN when the class is absent from the labels)
- mIoU = nanmean_k IoU_k, mAcc = nanmean_k Acc_k, aAcc = trace(C) / sum(C).

Accumulating counts (rather than averaging per-image scores) makes the result exact and independent of batch size
and of how images are split over ranks: the matrices of all ranks are simply summed.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist


class ConfusionMatrix:
    """Running ``[K, K]`` int64 confusion matrix (rows: ground truth, columns: prediction)."""

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str = "cpu"):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch. ``pred``, ``target``: integer tensors of the same shape (e.g. ``[B, H, W]``)."""
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        pred = pred.reshape(-1).long()
        target = target.reshape(-1).long().to(pred.device)
        valid = target != self.ignore_index
        pred, target = pred[valid], target[valid]
        k = self.num_classes
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= k):
            raise ValueError(
                f"label values must lie in [0, {k - 1}] or be the ignore index {self.ignore_index}"
            )
        counts = torch.bincount(target * k + pred, minlength=k * k)
        self.matrix += counts.reshape(k, k).to(self.matrix.device)

    def all_reduce(self) -> None:
        """Sum the matrices of all ranks (no-op outside a process group)."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)

    def compute(self, class_names: list[str] | None = None) -> dict:
        """Return ``{"miou", "macc", "aacc", "per_class": [{"name", "iou", "acc", "pixels"}], "pixels"}``.

        Scores are fractions in [0, 1]; an undefined per-class score is ``None`` (JSON null) and is left out of the
        means, as in mmsegmentation's ``nanmean``.
        """
        return summarize(self.matrix, class_names)


def summarize(matrix: torch.Tensor, class_names: list[str] | None = None) -> dict:
    """Metrics of a ``[K, K]`` confusion matrix; see the module docstring for the formulas."""
    m = matrix.double().cpu()
    k = m.shape[0]
    names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for {k} classes")
    tp = m.diagonal()
    gt = m.sum(1)
    pred = m.sum(0)
    union = gt + pred - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, math.nan))
    acc = torch.where(gt > 0, tp / gt.clamp_min(1), torch.full_like(tp, math.nan))
    total = m.sum()

    def nanmean(x: torch.Tensor) -> float | None:
        v = x[~torch.isnan(x)]
        return float(v.mean()) if v.numel() else None

    def opt(x: float) -> float | None:
        return None if math.isnan(x) else float(x)

    return {
        "miou": nanmean(iou),
        "macc": nanmean(acc),
        "aacc": float(tp.sum() / total) if total > 0 else None,
        "pixels": int(total),
        "per_class": [
            {"name": names[i], "iou": opt(float(iou[i])), "acc": opt(float(acc[i])), "pixels": int(gt[i])}
            for i in range(k)
        ],
    }


def format_table(metrics: dict) -> str:
    """A plain-text per-class table (IoU / Acc in percent), followed by the summary line."""
    width = max([len(c["name"]) for c in metrics["per_class"]] + [5])
    lines = [f"{'class':<{width}}  {'IoU':>6}  {'Acc':>6}"]
    for c in metrics["per_class"]:
        iou = "   n/a" if c["iou"] is None else f"{100 * c['iou']:6.2f}"
        acc = "   n/a" if c["acc"] is None else f"{100 * c['acc']:6.2f}"
        lines.append(f"{c['name']:<{width}}  {iou}  {acc}")

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.2f}"

    lines.append(f"mIoU {pct(metrics['miou'])}  mAcc {pct(metrics['macc'])}  aAcc {pct(metrics['aacc'])}")
    return "\n".join(lines)
