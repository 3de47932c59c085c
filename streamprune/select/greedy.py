"""Weighted greedy residual selection (= column-pivoted QR on the rows of X), DESIGN 3.1."""

from __future__ import annotations

import torch
from torch import Tensor

ZERO_TOL = 1e-9  # residual energy <= ZERO_TOL * (largest row energy) counts as zero (float32 noise floor)


def check_matrix(X: Tensor, name: str = "X") -> Tensor:
    """Validate a 2-D finite tensor; return it as float32 (same device)."""
    if not isinstance(X, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(X).__name__}")
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {tuple(X.shape)}")
    if X.is_complex() or X.dtype == torch.bool:
        raise ValueError(f"{name} must be a real floating tensor, got {X.dtype}")
    X = X.float()
    if not torch.isfinite(X).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return X


def check_weights(weights, n: int, device) -> Tensor:
    """Validate (n,) finite non-negative weights; float32 on device."""
    w = torch.as_tensor(weights).to(device=device, dtype=torch.float32).reshape(-1)
    if w.numel() != n:
        raise ValueError(f"weights has {w.numel()} entries for {n} rows")
    if not torch.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be finite and >= 0")
    return w


def greedy_residual(R: Tensor, k: int, Q: Tensor | None = None, *, min_energy: float = 0.0,
                    zero_energy: float | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Greedy picks on residual rows R (n, d) float32, updated in place (rank-1 steps, O(n d) per pick).

    R must already be orthogonal to Q (d, r) (orthonormal columns) if Q is given. Each step takes the row
    with the largest residual energy (ties: smallest index), stops when that energy <= max(min_energy,
    zero_energy) or after k picks. The new direction q = R[j] / ||R[j]|| gets a second Gram-Schmidt pass
    against Q and the earlier picks. Returns (picks (p,) long, Q_new (d, p) new directions, energies (p,)
    residual energy of each pick when it was taken).
    """
    n, d = R.shape
    zero = float(zero_energy) if zero_energy is not None else 0.0
    stop = max(float(min_energy), zero)
    k = min(int(k), n, d)
    basis = [Q] if Q is not None and Q.shape[1] else []
    new = R.new_zeros(d, k)  # (d, k)
    energy = R.pow(2).sum(dim=1)  # (n,)
    taken = torch.zeros(n, dtype=torch.bool, device=R.device)
    picks, energies = [], []
    for i in range(k):
        e, j = torch.max(energy, dim=0)  # first maximum = smallest index
        e = float(e)
        if e <= stop:
            break
        q = R[j].clone()  # (d,)
        for B in basis + [new[:, :i]]:  # second Gram-Schmidt pass
            if B.shape[1]:
                q -= B @ (B.T @ q)
        q /= q.norm().clamp_min(1e-30)
        new[:, i] = q
        c = R @ q  # (n,)
        R.addr_(c, q, alpha=-1.0)
        taken[j] = True
        energy = torch.linalg.vector_norm(R, dim=1).square_().masked_fill_(taken, -1.0)
        picks.append(int(j))
        energies.append(e)
    p = len(picks)
    return (torch.tensor(picks, dtype=torch.long, device=R.device), new[:, :p],
            torch.tensor(energies, dtype=torch.float32, device=R.device))


def select_subspace(X: Tensor, k: int, weights: Tensor | None = None) -> Tensor:
    """Rows of X (n, d) in greedy residual order; returns (min(k, n),) distinct int64 indices (X's device).

    Pick order = pivot order of scipy.linalg.qr(X.T * sqrt(w), pivoting=True) on well-conditioned input:
    each step takes the row with the largest residual energy w_i ||x_i - Q Q^T x_i||^2 (float32, ties:
    smallest index). Tie rule at zero residual: once every unpicked row's residual energy is <= 1e-9 x the
    largest weighted row energy (the rank is exhausted, e.g. k > rank or k > d), the basis is reset and
    greedy continues on the unpicked rows from scratch (a new round); rows with zero weighted norm come last
    in index order. Raises ValueError on non-2-D / non-finite X, bad weights or k < 0.
    """
    X = check_matrix(X)
    n = X.shape[0]
    if int(k) != k or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k}")
    k = min(int(k), n)
    A = X if weights is None else X * check_weights(weights, n, X.device).sqrt()[:, None]  # (n, d)
    norms = A.pow(2).sum(dim=1)  # (n,)
    top = float(norms.max()) if n else 0.0
    zero = ZERO_TOL * top
    alive = (norms > zero).nonzero().reshape(-1)  # rows with non-zero energy, ascending index
    out: list[Tensor] = []
    got = 0
    while got < k and alive.numel():
        R = A[alive].clone()  # (m, d) residuals of the unpicked rows against a fresh basis
        picks, _, _ = greedy_residual(R, k - got, zero_energy=zero)
        if picks.numel() == 0:
            break
        out.append(alive[picks])
        got += picks.numel()
        keep = torch.ones(alive.numel(), dtype=torch.bool, device=A.device)
        keep[picks] = False
        alive = alive[keep]
    if got < k:  # zero rows last, in index order
        used = torch.zeros(n, dtype=torch.bool, device=A.device)
        for o in out:
            used[o] = True
        out.append((~used).nonzero().reshape(-1)[: k - got])
    if not out:
        return torch.zeros(0, dtype=torch.long, device=A.device)
    return torch.cat(out)
