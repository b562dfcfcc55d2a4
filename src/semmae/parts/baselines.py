"""Reference partitions that learned parts are scored against (paper Fig. 4 / Table 4 and the usual unsupervised
part-discovery baselines), all on the same G x G grid as the part cache:

* raw encoder attention: argmax over the last layer's CLS-attention heads (:func:`semmae.parts.inference.attention_parts`);
* k-means on the frozen patch tokens (L2-normalised, one clustering for the whole dataset so ids are shared);
* a fixed spatial split of the grid into N blocks;
* the ceiling: the best labelling a G x G grid can express (majority true label per cell).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def spatial_split(grid: int, num_parts: int) -> torch.Tensor:
    """long [grid, grid]: rows x cols blocks (rows = floor(sqrt(N)), cols = ceil(N / rows)); ids >= N merge into
    N - 1, so exactly ``min(N, grid^2)`` ids appear."""
    rows = max(1, int(math.isqrt(num_parts)))
    cols = math.ceil(num_parts / rows)
    r = torch.arange(grid) * rows // grid
    c = torch.arange(grid) * cols // grid
    return (r[:, None] * cols + c[None, :]).clamp(max=num_parts - 1)


def resize_ids(ids: torch.Tensor, grid: int) -> torch.Tensor:
    """Nearest-neighbour resize of label maps long [B, g, g] -> [B, grid, grid]."""
    if ids.shape[-1] == grid:
        return ids
    return F.interpolate(ids[:, None].float(), size=(grid, grid), mode="nearest")[:, 0].long()


class TokenKMeans:
    """k-means over L2-normalised patch tokens, fitted on a sample drawn across the dataset."""

    def __init__(self, num_clusters: int, seed: int = 0):
        self.num_clusters, self.seed = num_clusters, seed
        self.model = None

    def fit(self, tokens: np.ndarray) -> TokenKMeans:
        from sklearn.cluster import MiniBatchKMeans

        x = tokens / np.linalg.norm(tokens, axis=1, keepdims=True).clip(1e-12)
        self.model = MiniBatchKMeans(
            n_clusters=self.num_clusters, random_state=self.seed, n_init=3, batch_size=4096
        ).fit(x)
        return self

    def predict(self, patches: torch.Tensor) -> torch.Tensor:
        """patch tokens [B, L, D] -> cluster ids long [B, g, g] on the encoder grid."""
        b, n, d = patches.shape
        x = F.normalize(patches.float(), dim=-1).reshape(-1, d).cpu().numpy()
        g = int(round(n**0.5))
        return torch.from_numpy(self.model.predict(x).astype(np.int64)).reshape(b, g, g)


def majority_per_cell(labels: np.ndarray, grid: int, num_labels: int) -> np.ndarray:
    """Ceiling labelling: labels int [R, R] (R a multiple of grid) -> int [grid, grid], majority label per cell."""
    r = labels.shape[0] // grid
    cells = labels.reshape(grid, r, grid, r).transpose(0, 2, 1, 3).reshape(grid, grid, r * r)
    counts = (cells[..., None] == np.arange(num_labels)).sum(2)
    return counts.argmax(-1)
