"""Weighted k-nearest-neighbour classification on frozen features (Wu et al. 2018, as used by DINO/iBOT):
a cheap representation-quality signal during and after pretraining (the
online kNN of ``--eval-every`` and ``semmae knn``, :mod:`semmae.eval.knn`).

For a query q with L2-normalised feature, take the k training features with the highest cosine similarity
s_j, weight each by exp(s_j / T) and add the weight to its class; the class scores are
``votes[c] = sum_{j in top-k, y_j = c} exp(s_j / T)`` and the prediction is their arg-max (top-5: the five best).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from semmae.errors import UserError


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Class scores [M, C] of queries [M, D] against a bank [N, D] with labels [N] (cosine, temperature-weighted)."""
    if train_features.shape[0] == 0:
        raise UserError("kNN needs at least one training feature")
    if train_features.shape[1] != query_features.shape[1]:
        raise UserError(
            f"feature dims differ: bank {train_features.shape[1]} vs queries {query_features.shape[1]}"
        )
    c = int(num_classes if num_classes is not None else int(train_labels.max()) + 1)
    k = min(k, train_features.shape[0])
    bank = F.normalize(train_features.float(), dim=1)
    labels = train_labels.to(bank.device).long()
    scores = []
    for start in range(0, query_features.shape[0], chunk_size):
        q = F.normalize(query_features[start : start + chunk_size].float().to(bank.device), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)  # [m, k]
        weights = (sim / temperature).exp()
        votes = torch.zeros(q.shape[0], c, device=bank.device)
        votes.scatter_add_(1, labels[idx], weights)
        scores.append(votes)
    return torch.cat(scores) if scores else torch.zeros(0, c, device=bank.device)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
) -> dict[str, float]:
    """Top-1 / top-5 accuracy (percent) of the weighted kNN classifier; callable from the pretraining engine."""
    if num_classes is None:
        num_classes = int(max(int(train_labels.max()), int(test_labels.max()))) + 1
    votes = knn_predict(train_features, train_labels, test_features, k, temperature, num_classes)
    labels = test_labels.to(votes.device).long()
    n = max(labels.numel(), 1)
    top = votes.topk(min(5, num_classes), dim=1).indices
    top1 = (top[:, 0] == labels).float().sum().item() * 100.0 / n
    top5 = (top == labels[:, None]).any(dim=1).float().sum().item() * 100.0 / n
    return {"top1": top1, "top5": top5}
