"""Model-free quality measures for token selection (docs/design.md §8). All math in float64 on CPU."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

_REL_TOL = 1e-10  # energies below this fraction of ||X||_F^2 count as zero


def _as_matrix(X) -> Tensor:
    X = torch.as_tensor(X)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D (n, d) matrix, got shape {tuple(X.shape)}")
    X = X.detach().to("cpu", torch.float64)
    if not torch.isfinite(X).all():
        raise ValueError("X contains NaN or Inf")
    return X


def _as_index(idx, n: int) -> Tensor:
    idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1).cpu()
    if idx.numel() and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"kept indices must lie in [0, {n}), got range [{int(idx.min())}, {int(idx.max())}]")
    return torch.unique(idx)


def row_basis(rows: Tensor, rtol: float = 1e-10) -> Tensor:
    """Orthonormal basis (d, r) of the span of `rows` (m, d), float64; r = numerical rank (SVD, rtol)."""
    if rows.shape[0] == 0:
        return rows.new_zeros(rows.shape[1], 0)
    _, s, vh = torch.linalg.svd(rows, full_matrices=False)
    r = int((s > rtol * s[0]).sum()) if s.numel() and s[0] > 0 else 0
    return vh[:r].T  # (d, r)


def residual_energy(X: Tensor, basis: Tensor) -> Tensor:
    """Per-row squared residual ||x - B B^T x||^2 for an orthonormal basis B (d, r)."""
    R = X - (X @ basis) @ basis.T  # (n, d)
    return R.pow(2).sum(dim=1)


def reconstruction_ratio_vectors(X: Tensor, s2: Tensor, kept: Tensor, chunk: int = 8192) -> float:
    """||X - P_S X||_F^2 / sum_{i > k} sigma_i(X)^2 for S = the span of the kept vectors (k, d), which need
    not be rows of X (recycled tokens are merged means). s2: X's squared singular values, descending (pass
    them once for many calls). Conventions as reconstruction_ratio."""
    total = float(s2.sum())
    if total == 0.0:
        return math.nan
    B = row_basis(kept.double())  # (d, r)
    resid = sum(float(residual_energy(X[i:i + chunk].double(), B).sum()) for i in range(0, X.shape[0], chunk))
    bound = float(s2[kept.shape[0]:].sum())
    tol = _REL_TOL * total
    if bound <= tol:
        return math.nan if resid <= tol else math.inf
    return max(resid, 0.0) / bound


def reconstruction_ratio(X, kept_idx, s2: Tensor | None = None) -> float:
    """||X - P_S X||_F^2 / sum_{i > k} sigma_i(X)^2 with k = len(unique kept_idx).

    P_S projects each row of X (n, d) onto the span of the kept rows X[kept_idx]. 1.0 is the best any
    k-row subset can do (Eckart-Young); larger is worse. When the bound is ~0 (k >= numerical rank of X;
    below 1e-10 of ||X||_F^2): returns nan if the residual is ~0 too (ratio undefined, the subset spans X),
    else inf. An all-zero X gives nan. Use local_reconstruction when k >= d. s2: X's squared singular
    values when the caller already has them (else computed here).
    """
    X = _as_matrix(X)
    kept = _as_index(kept_idx, X.shape[0])
    if s2 is None:
        s2 = torch.linalg.svdvals(X).pow(2)
    return reconstruction_ratio_vectors(X, s2, X[kept])


def _local_rel(X: Tensor, times: Tensor, kept: Tensor, kept_times: Tensor, window: float) -> Tensor:
    """(n,) float64: ||x - P x||^2 / ||x||^2 per row, P = projection on the kept vectors whose time is within
    +-window of the row's (1.0 when none)."""
    norms = X.double().pow(2).sum(dim=1)  # (n,)
    rel = torch.ones(X.shape[0], dtype=torch.float64)
    uniq, inverse = torch.unique(times, return_inverse=True)
    kept, kt = kept.double(), kept_times.double()
    for u, t in enumerate(uniq.tolist()):
        near = ((kt >= t - window) & (kt <= t + window)).nonzero().reshape(-1)
        if near.numel() == 0:
            continue
        rows = (inverse == u).nonzero().reshape(-1)
        res = residual_energy(X[rows].double(), row_basis(kept[near]))
        rel[rows] = (res / norms[rows].clamp_min(1e-300)).clamp(0.0, 1.0)
    return rel


def local_reconstruction_vectors(X: Tensor, times: Tensor, kept: Tensor, kept_times: Tensor, window: float) -> float:
    """local_reconstruction for kept vectors (k, d) at kept_times (k,) that need not be rows of X."""
    valid = X.double().pow(2).sum(dim=1) > 0
    if not bool(valid.any()):
        return math.nan
    return float(_local_rel(X, times, kept, kept_times, window)[valid].mean())


def local_reconstruction(X, times, kept_idx, window: float) -> float:
    """Mean relative residual energy of each token reconstructed from kept tokens within +-window s.

    For every row x of X (n, d) at time t (times (n,)), S_t = kept rows whose time lies in
    [t - window, t + window]; the token's score is ||x - P_{S_t} x||^2 / ||x||^2 (1.0 when S_t is empty,
    0.0 for a kept token). Rows with ||x|| == 0 are left out of the mean. Returns the mean over rows in
    [0, 1] (0 = perfect), nan when every row is zero. Meaningful for any budget, including k >= d.
    """
    X = _as_matrix(X)
    n = X.shape[0]
    times = torch.as_tensor(times, dtype=torch.float64).reshape(-1).cpu()
    if times.numel() != n:
        raise ValueError(f"times has {times.numel()} entries for {n} rows")
    if not math.isfinite(window) or window < 0:
        raise ValueError(f"window must be a finite number >= 0, got {window}")
    kept = _as_index(kept_idx, n)
    valid = X.pow(2).sum(dim=1) > 0
    if not bool(valid.any()):
        return math.nan
    rel = _local_rel(X, times, X[kept], times[kept], window)
    rel[kept] = 0.0
    return float(rel[valid].mean())


def needle_recall(kept_ids, events: Sequence) -> tuple[float, float]:
    """(event_recall, token_recall) of inserted short events.

    events: list of id tensors, one per event (global token ids). event_recall = fraction of events with
    at least one id in kept_ids; token_recall = kept event ids / all event ids (over all events pooled).
    Returns (nan, nan) when there are no events (or no event ids).
    """
    kept = set(torch.as_tensor(kept_ids, dtype=torch.long).reshape(-1).tolist())
    ev = [set(torch.as_tensor(e, dtype=torch.long).reshape(-1).tolist()) for e in events]
    total = sum(len(e) for e in ev)
    if not ev or total == 0:
        return math.nan, math.nan
    hit_events = sum(1 for e in ev if e & kept)
    hit_tokens = sum(len(e & kept) for e in ev)
    return hit_events / len(ev), hit_tokens / total


def temporal_coverage(kept_times, t0: float, t1: float) -> float:
    """Longest stretch in seconds within [t0, t1] that has no kept token (0 = every instant covered).

    Gaps are measured between consecutive distinct kept times, plus the start gap (first kept - t0) and the
    end gap (t1 - last kept); kept times outside [t0, t1] are clipped. No kept token: t1 - t0.
    """
    if not (math.isfinite(t0) and math.isfinite(t1)) or t1 < t0:
        raise ValueError(f"need finite t0 <= t1, got t0={t0}, t1={t1}")
    kt = torch.as_tensor(kept_times, dtype=torch.float64).reshape(-1).cpu()
    if not torch.isfinite(kt).all():
        raise ValueError("kept_times contain NaN or Inf")
    if kt.numel() == 0:
        return float(t1 - t0)
    pts = torch.cat([torch.tensor([t0], dtype=torch.float64), kt.clamp(t0, t1).unique(),
                     torch.tensor([t1], dtype=torch.float64)])
    return float(pts.diff().max())
