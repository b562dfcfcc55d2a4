"""Part-quality metrics, all computed from a contingency table so that per-image and pooled scores share code.

``C[k, j]`` counts pixels of ground-truth label k (0 = background, 1..K = parts) given predicted part j. From it:

* **NMI / ARI over foreground pixels** (rows 1..K): NMI with the arithmetic-mean normalisation and ARI with the
  Hubert-Arabie adjustment, the same definitions (and edge cases) as scikit-learn's
  ``normalized_mutual_info_score`` / ``adjusted_rand_score``.
* **Hungarian mIoU**: predicted parts are matched one-to-one to the K true parts to maximise the summed IoU
  (computed over all pixels, so a part spilling onto the background is penalised); unmatched true parts score 0.
* **fg/bg IoU**: the IoU of the best union of predicted parts with the object (true label > 0), searched over
  all 2^N unions.

Summing the tables of many images gives the pooled scores (do part ids mean the same part across images?);
scoring each table and averaging gives the per-image scores (is each image partitioned coherently?).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def contingency(true: np.ndarray, pred: np.ndarray, num_true: int, num_pred: int) -> np.ndarray:
    """int64 [num_true, num_pred] counts of (true, pred) label pairs; labels are ints in range."""
    idx = true.astype(np.int64).ravel() * num_pred + pred.astype(np.int64).ravel()
    return np.bincount(idx, minlength=num_true * num_pred).reshape(num_true, num_pred)


def _entropy(counts: np.ndarray) -> float:
    n = counts.sum()
    p = counts[counts > 0] / n
    return float(-(p * np.log(p)).sum())


def nmi_from_table(c: np.ndarray) -> float:
    """NMI (arithmetic normalisation) of a contingency table; sklearn's conventions for degenerate cases."""
    c = c[c.sum(1) > 0][:, c.sum(0) > 0]
    if c.size == 0 or (c.shape[0] == 1 and c.shape[1] == 1):
        return 1.0
    n = c.sum()
    rows, cols = c.sum(1), c.sum(0)
    nz = c > 0
    outer = np.outer(rows, cols)[nz].astype(np.float64)
    mi = float((c[nz] / n * (np.log(c[nz] * n) - np.log(outer))).sum())
    if mi <= 0:
        return 0.0
    denom = (_entropy(rows) + _entropy(cols)) / 2
    return float(mi / denom) if denom > 0 else 0.0


def _pairs(x: np.ndarray) -> float:
    x = x.astype(np.float64)
    return float((x * (x - 1) / 2).sum())


def ari_from_table(c: np.ndarray) -> float:
    """Adjusted Rand index of a contingency table (sklearn's conventions for degenerate cases)."""
    n = float(c.sum())
    if n == 0:
        return 1.0
    rows, cols = c.sum(1), c.sum(0)
    nr, nc = int((rows > 0).sum()), int((cols > 0).sum())
    if nr == nc == 1 or nr == nc == 0 or (nr == nc == n):
        return 1.0
    index, a, b = _pairs(c), _pairs(rows), _pairs(cols)
    expected = a * b / (n * (n - 1) / 2)
    max_index = (a + b) / 2
    if max_index == expected:
        return 1.0
    return float((index - expected) / (max_index - expected))


def hungarian_miou(c: np.ndarray) -> float:
    """Mean IoU of true parts 1..K with predicted parts matched one-to-one (table [K+1, N] incl. background row).

    Only true parts that occur (row sum > 0) are averaged; NaN if none does."""
    present = np.flatnonzero(c[1:].sum(1) > 0) + 1
    if present.size == 0:
        return float("nan")
    inter = c[present].astype(np.float64)  # [P, N]
    union = c[present].sum(1, keepdims=True) + c.sum(0, keepdims=True) - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    r, col = linear_sum_assignment(-iou)
    return float(iou[r, col].sum() / present.size)


def best_union_iou(c: np.ndarray, max_parts: int = 16) -> float:
    """IoU of the best union of predicted parts with the foreground (true label > 0); NaN without foreground."""
    fg_per_part = c[1:].sum(0).astype(np.float64)  # [N]
    tot_per_part = c.sum(0).astype(np.float64)
    fg_total = fg_per_part.sum()
    if fg_total == 0:
        return float("nan")
    used = np.flatnonzero(tot_per_part > 0)
    if used.size > max_parts:
        raise ValueError(f"best-union search over {used.size} parts is too large (max {max_parts})")
    subsets = ((np.arange(1, 2**used.size)[:, None] >> np.arange(used.size)) & 1).astype(np.float64)
    inter = subsets @ fg_per_part[used]
    union = fg_total + subsets @ (tot_per_part[used] - fg_per_part[used])
    return float((inter / union).max())


def table_scores(c: np.ndarray) -> dict[str, float]:
    """All scores of one table [K+1, N]: ``nmi``, ``ari`` (foreground rows), ``miou``, ``fg_iou``."""
    fg = c[1:]
    return {
        "nmi": nmi_from_table(fg),
        "ari": ari_from_table(fg),
        "miou": hungarian_miou(c),
        "fg_iou": best_union_iou(c),
    }


class PartScorer:
    """Accumulates per-image tables; :meth:`result` gives pooled ``nmi, ari, miou, fg_iou`` and per-image means
    ``nmi_image, ari_image, miou_image, fg_iou_image`` (images without foreground are left out of the means)."""

    def __init__(self, num_true: int, num_pred: int):
        self.num_true, self.num_pred = num_true, num_pred
        self.pooled = np.zeros((num_true, num_pred), np.int64)
        self.per_image: list[dict[str, float]] = []

    def add(self, true: np.ndarray, pred: np.ndarray) -> None:
        c = contingency(true, pred, self.num_true, self.num_pred)
        self.pooled += c
        if c[1:].sum() > 0:
            self.per_image.append(table_scores(c))

    def result(self) -> dict[str, float]:
        out = table_scores(self.pooled)
        for k in ("nmi", "ari", "miou", "fg_iou"):
            vals = [d[k] for d in self.per_image if np.isfinite(d[k])]
            out[f"{k}_image"] = float(np.mean(vals)) if vals else float("nan")
        out["images"] = len(self.per_image)
        return out


class KeypointScorer:
    """Keypoint-to-part assignment (unsupervised part discovery protocol): each visible keypoint takes the
    predicted part of the cell it falls in; NMI/ARI between keypoint names and those parts, pooled over the
    dataset (``kp_nmi``, ``kp_ari``). There is no per-image score: each keypoint name occurs at most once per
    image, so a per-image ARI is always 0 and a per-image NMI only rewards spreading keypoints over parts."""

    def __init__(self, num_kp: int, num_pred: int):
        self.num_kp, self.num_pred = num_kp, num_pred
        self.pooled = np.zeros((num_kp, num_pred), np.int64)
        self.images = 0

    def add(self, kp_ids: np.ndarray, pred_at_kp: np.ndarray) -> None:
        if kp_ids.size == 0:
            return
        self.pooled += contingency(kp_ids, pred_at_kp, self.num_kp, self.num_pred)
        self.images += 1

    def result(self) -> dict[str, float]:
        return {
            "kp_nmi": nmi_from_table(self.pooled),
            "kp_ari": ari_from_table(self.pooled),
            "kp_images": self.images,
            "keypoints": int(self.pooled.sum()),
        }
