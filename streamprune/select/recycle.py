"""Deterministic density-peak clustering and merge (SparseVLM-style token recycling, docs/design.md §3.4)."""

from __future__ import annotations

import torch
from torch import Tensor

from .greedy import check_matrix


def density_peak_scores(tokens: Tensor, *, k_neighbors: int = 5) -> tuple[Tensor, Tensor]:
    """Log-density and delta of each token (float32, no noise).

    log_rho_i = -mean squared Euclidean distance to its k nearest other tokens (k = min(k_neighbors, n-1));
    delta_i = distance to the nearest token that is denser (larger rho, or equal rho and smaller index);
    for the densest token delta = its largest distance to any token. Returns (log_rho (n,), delta (n,)).
    """
    x = check_matrix(tokens, "tokens")  # (n, d)
    n = x.shape[0]
    if n == 0:
        return x.new_zeros(0), x.new_zeros(0)
    if n == 1:
        return x.new_zeros(1), x.new_zeros(1)
    sq = torch.cdist(x, x).pow(2)  # (n, n)
    sq.fill_diagonal_(float("inf"))
    k = max(1, min(k_neighbors, n - 1))
    knn = torch.topk(sq, k, dim=1, largest=False).values  # (n, k)
    log_rho = -knn.mean(dim=1)  # (n,)
    sq.fill_diagonal_(0.0)
    dist = sq.clamp_min(0).sqrt()  # (n, n)
    idx = torch.arange(n, device=x.device)
    # j denser than i: rho_j > rho_i, or rho_j == rho_i and j < i (ties broken by index)
    above, same = log_rho[None, :] > log_rho[:, None], log_rho[None, :] == log_rho[:, None]
    denser = above | (same & (idx[None, :] < idx[:, None]))
    masked = torch.where(denser, dist, torch.full_like(dist, float("inf")))
    delta = masked.min(dim=1).values  # (n,)
    top = torch.isinf(delta)
    delta[top] = dist[top].max(dim=1).values
    return log_rho, delta


def density_peak_merge(tokens: Tensor, n_clusters: int, *, k_neighbors: int = 5) -> tuple[Tensor, Tensor]:
    """Cluster tokens by density peaks and merge each cluster into its mean.

    Centres are the c = min(n_clusters, n) tokens with the largest rho * delta (computed as
    log_rho + log delta, so large feature norms never underflow); ties go to the smaller index. Every token
    is assigned to its nearest centre (ties: the earlier centre in index order); a centre is assigned to
    itself. Clusters are numbered in ascending order of their centre's token index.
    Returns merged (c, d) float32 cluster means and assign (n,) int64 cluster number of each token.
    Deterministic: no random noise. Raises ValueError on non-2-D or non-finite input or n_clusters < 1.
    """
    x = check_matrix(tokens, "tokens")  # (n, d)
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
    n = x.shape[0]
    if n == 0:
        return x.new_zeros(0, x.shape[1]), torch.zeros(0, dtype=torch.long, device=x.device)
    c = min(int(n_clusters), n)
    if c == n:
        return x.clone(), torch.arange(n, device=x.device)
    log_rho, delta = density_peak_scores(x, k_neighbors=k_neighbors)
    score = log_rho + torch.log(delta.clamp_min(torch.finfo(torch.float32).tiny))  # (n,)
    order = torch.sort(-score, stable=True).indices  # descending score, ties by index
    centres = torch.sort(order[:c]).values  # (c,) ascending token index
    d2 = torch.cdist(x, x[centres]).pow(2)  # (n, c)
    assign = d2.argmin(dim=1)  # first minimum = earlier centre
    assign[centres] = torch.arange(c, device=x.device)
    counts = torch.bincount(assign, minlength=c).to(x.dtype)  # (c,)
    merged = torch.zeros(c, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, assign, x)
    merged /= counts[:, None]
    return merged, assign
