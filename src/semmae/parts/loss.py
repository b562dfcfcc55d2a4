"""Part-learning objective (paper Sec. 3.1, Eq. 5-7).

* Eq. 5, reconstruction: ``L_rec = 1/(HW) sum_{i,j} ||I(i,j) - I_hat(i,j)||^2``: the squared error summed over the
  colour channels and averaged over the H x W pixels (and the batch) of the normalised image. This is 3x the
  per-value mean; with the mean, the paper's lambda = 0.03 would act as 0.09.
* Eq. 6, diversity: with ``M_hat`` the maps L2-normalised over positions, ``S = M_hat M_hat^T`` [N, N] is the
  cosine-similarity matrix of the N maps; ``L_div = mean((S - I)^2)`` pushes different parts apart (and, for the
  softmax-over-positions variant, is the only thing that stops all parts from collapsing onto one region).
* Eq. 7: ``L = L_rec + lambda * L_div`` with lambda = 0.03.

Beyond the paper (off unless weighted): the **concentration** term of SCOPS (Hung et al., CVPR 2019), the
spatial variance of each part's map normalised to a distribution over positions. A part that spreads over the
whole image pays the most, so the term counters the collapse of one part onto every cell.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 5: squared error summed over channels, averaged over pixels and images; ``recon``, ``target``
    [B, C, S, S]."""
    return F.mse_loss(recon, target, reduction="none").sum(dim=1).mean()


def cosine_similarity_matrix(maps: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity between every pair of part maps: [B, N, L] -> [B, N, N]."""
    m = F.normalize(maps, dim=-1, eps=eps)
    return m @ m.transpose(1, 2)


def diversity_loss(maps: torch.Tensor) -> torch.Tensor:
    """Eq. 6: mean squared distance of the maps' cosine-similarity matrix from the identity, maps [B, N, L]."""
    sim = cosine_similarity_matrix(maps)
    eye = torch.eye(maps.shape[1], device=maps.device, dtype=maps.dtype)
    return ((sim - eye) ** 2).mean()


def concentration_loss(maps: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean spatial variance of the part maps [B, N, L] on a square grid with coordinates in [-1, 1]: each map is
    normalised to a distribution over positions, ``sum_u R(u) ||u - c||^2`` with ``c = sum_u R(u) u``."""
    b, n, length = maps.shape
    g = int(round(length**0.5))
    axis = torch.linspace(-1.0, 1.0, g, device=maps.device, dtype=maps.dtype)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    pos = torch.stack([yy.reshape(-1), xx.reshape(-1)], dim=-1)  # [L, 2]
    r = maps / maps.sum(dim=-1, keepdim=True).clamp_min(eps)
    centre = r @ pos  # [B, N, 2]
    sq = (pos.unsqueeze(0).unsqueeze(0) - centre.unsqueeze(2)).pow(2).sum(-1)  # [B, N, L]
    return (r * sq).sum(-1).mean()


def part_loss(
    recon: torch.Tensor, target: torch.Tensor, maps: torch.Tensor, lam: float, concentration: float = 0.0
) -> dict[str, torch.Tensor]:
    """Eq. 7: ``{"loss": L_rec + lam * L_div [+ concentration * L_con], "rec": L_rec, "div": L_div
    [, "con": L_con]}`` (the concentration term only when weighted)."""
    rec = reconstruction_loss(recon, target)
    div = diversity_loss(maps)
    out = {"loss": rec + lam * div, "rec": rec, "div": div}
    if concentration > 0:
        con = concentration_loss(maps)
        out["loss"] = out["loss"] + concentration * con
        out["con"] = con
    return out
