"""Weighted greedy residual selection (= column-pivoted QR on the rows of X), DESIGN 3.1."""

from __future__ import annotations

import math

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


def check_budget(budget) -> int:
    """A token budget: a positive integer (bools rejected)."""
    if isinstance(budget, bool) or int(budget) != budget or budget <= 0:
        raise ValueError(f"budget must be a positive integer, got {budget}")
    return int(budget)


def check_k(k) -> int:
    """A selection size: a non-negative integer (bools rejected)."""
    if isinstance(k, bool) or int(k) != k or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k}")
    return int(k)


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
    k = min(check_k(k), n)
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


def _swap_state(A: Tensor, K: Tensor, kept: list[int], pool: Tensor):
    """Exact float64 state of a kept set (rows `kept` of A (n, d)) and a candidate pool (m,) of row ids."""
    S = A[kept].double()  # (k, d)
    G = S @ S.T  # (k, k)
    L, info = torch.linalg.cholesky_ex(G)
    if int(info):
        return None
    Ginv = torch.cholesky_inverse(L)  # (k, k)
    W = S @ K @ S.T  # (k, k) = S K S^T
    Xc = A[pool].double()  # (m, d)
    Rc = Xc - (Xc @ S.T) @ Ginv @ S  # (m, d) residuals against span(S)
    Rc -= (Rc @ S.T) @ Ginv @ S  # second pass
    return {"S": S, "Ginv": Ginv, "W": W, "Xc": Xc, "Rc": Rc, "Z": Rc @ K}


def _pool(A: Tensor, kept: list[int], m: int) -> Tensor:
    """Kept rows + the m unkept rows whose addition alone would lower ||A - P A||_F^2 most (float32)."""
    n = A.shape[0]
    S = A[kept]  # (k, d)
    Qk = torch.linalg.qr(S.T).Q  # (d, k)
    R = A - (A @ Qk) @ Qk.T  # (n, d)
    R -= (R @ Qk) @ Qk.T
    e = R.pow(2).sum(dim=1)  # (n,)
    RtR = R.T @ R  # (d, d)
    score = ((R @ RtR) * R).sum(dim=1) / e.clamp_min(1e-30)  # energy of all rows along r_j / ||r_j||^2
    score[e <= ZERO_TOL * float(e.max().clamp_min(1e-30))] = -1.0
    is_kept = torch.zeros(n, dtype=torch.bool, device=A.device)
    is_kept[kept] = True
    score[is_kept] = -math.inf
    m = min(m, n - len(kept))
    top = torch.topk(score, m).indices if m > 0 else torch.zeros(0, dtype=torch.long, device=A.device)
    top = top[score[top] > 0]
    return torch.cat([torch.tensor(kept, dtype=torch.long, device=A.device), top])


def refine_swaps(X: Tensor, idx, *, weights: Tensor | None = None, f: float = 1.0 + 1e-3,
                 max_swaps: int | None = None, candidates: int | None = None, rounds: int = 8) -> Tensor:
    """Local search on a row subset: swap a kept row i for a row j while the swap lowers the (weighted)
    reconstruction error E = ||A - P_S A||_F^2 (A = sqrt(w) X, P_S = projection onto the kept rows' span)
    by more than a factor f (E_new < E / f).

    Each step scores every (kept i, candidate j) swap exactly from float64 rank-1 algebra on the d x d
    Gram K = A^T A (no projection is recomputed per trial) and takes the best. Candidates: the kept rows
    plus the `candidates` (default max(4k, 512)) unkept rows whose addition alone would lower E most; the
    pool is rebuilt when it has no improving swap left, at most `rounds` times. At most `max_swaps`
    (default 4k) swaps. Returns a (k,) int64 tensor: idx with swapped entries replaced in place (unique,
    same size). Kept rows that are linearly dependent are first replaced by greedy picks (when that lowers
    E). Float32 input math, float64 swap algebra; d' = min(n, d); work: O(n d'^2) for the Gram and per pool
    rebuild, O(m d' k + k^2 d' + d'^2) per swap. Raises ValueError on bad X / weights / idx (not 1-D, out
    of range, duplicates) or f < 1.
    """
    X = check_matrix(X)
    n, d = X.shape
    idx = torch.as_tensor(idx)
    if idx.ndim != 1 or (idx.numel() and (idx.is_floating_point() or idx.dtype == torch.bool)):
        raise ValueError(f"idx must be a 1-D integer tensor, got shape {tuple(idx.shape)} {idx.dtype}")
    idx = idx.to(device=X.device, dtype=torch.long)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValueError(f"idx must lie in [0, {n})")
    if torch.unique(idx).numel() != idx.numel():
        raise ValueError("idx has duplicate entries")
    if not (math.isfinite(f) and f >= 1.0):
        raise ValueError(f"f must be a finite number >= 1, got {f}")
    k = idx.numel()
    max_swaps = 4 * k if max_swaps is None else int(max_swaps)
    m = max(4 * k, 512) if candidates is None else int(candidates)
    if max_swaps < 0 or m < 0:
        raise ValueError("max_swaps and candidates must be >= 0")
    A = X if weights is None else X * check_weights(weights, n, X.device).sqrt()[:, None]  # (n, d)
    out = idx.clone()
    if k == 0 or k >= n or max_swaps == 0:
        return out
    if n < d:  # same errors for every subset with an (n, n) factor: A = T^T V^T, V orthonormal
        A = torch.linalg.qr(A.T).R.T.contiguous()  # (n, n)
    K = A.T.double() @ A.double()  # (d', d') float64 Gram
    trK = float(torch.trace(K))
    kept = _repair(A, out.tolist())
    if kept != out.tolist() and _error(A, K, kept) < _error(A, K, out.tolist()):
        out = torch.tensor(kept, dtype=torch.long, device=X.device)
    else:
        kept = out.tolist()
    order = list(range(k))  # output position of each internal slot
    swaps = 0
    for _ in range(max(1, int(rounds))):
        pool = _pool(A, kept, m)
        st = _swap_state(A, K, kept, pool)
        if st is None:
            break
        pos = {int(r): i for i, r in enumerate(pool.tolist())}
        in_S = torch.zeros(pool.numel(), dtype=torch.bool, device=A.device)
        in_S[:k] = True
        made = 0
        while swaps < max_swaps:
            S, Ginv, W, Xc, Rc, Z = (st[key] for key in ("S", "Ginv", "W", "Xc", "Rc", "Z"))
            E = trK - float((Ginv * W).sum())  # tr(K) - tr(P K)
            if E <= ZERO_TOL * trK:
                break
            D = torch.diagonal(Ginv).clamp_min(1e-300)  # (k,)
            U = (S.T @ Ginv) / D.sqrt()  # (d, k) unit directions only kept row i covers
            a2 = torch.diagonal(Ginv @ W @ Ginv) / D  # (k,) ||A u_i||^2: energy lost when i leaves
            C = Xc @ U  # (m, k) c_ji = x_j . u_i
            T = Z @ U  # (m, k) r_j^T K u_i
            b = (Z * Rc).sum(dim=1)  # (m,) r_j^T K r_j
            e = Rc.pow(2).sum(dim=1)  # (m,) ||r_j||^2
            den = e[:, None] + C.pow(2)  # (m, k) ||w_ij||^2, w_ij = r_j + c_ji u_i
            gain = (b[:, None] + 2 * C * T + C.pow(2) * a2[None]) / den.clamp_min(1e-300) - a2[None]
            bad = in_S[:, None] | (den <= 1e-12 * float(e.max().clamp_min(1e-300)) + 1e-300)
            gain = gain.masked_fill(bad, -math.inf)
            g, flat = torch.max(gain.reshape(-1), dim=0)
            if not float(g) > E * (1.0 - 1.0 / f):
                break
            jj, i = divmod(int(flat), k)
            _apply_swap(st, K, i, jj, C[:, i], U[:, i], A)
            old = kept.pop(i)
            kept.append(int(pool[jj]))
            o = order.pop(i)
            order.append(o)
            out[o] = int(pool[jj])
            in_S[jj] = True
            if old in pos:
                in_S[pos[old]] = False
            swaps += 1
            made += 1
        if made == 0 or swaps >= max_swaps:
            break
    return out


def _apply_swap(st: dict, K: Tensor, i: int, jj: int, c: Tensor, u: Tensor, A: Tensor):
    """Swap kept slot i for pool row jj in place (rank-1 updates; the new row goes to the last slot)."""
    S, Ginv, W, Rc, Z = st["S"], st["Ginv"], st["W"], st["Rc"], st["Z"]
    k = S.shape[0]
    w = Rc + c[:, None] * u[None]  # (m, d) residuals against span(S \ i)
    wj = w[jj]
    s = float(wj @ wj)  # residual energy of the new row against the other kept rows
    v = wj / math.sqrt(s)
    proj = w @ v  # (m,)
    st["Rc"] = w - proj[:, None] * v[None]
    st["Rc"][jj] = 0.0
    st["Z"] = Z + c[:, None] * (K @ u)[None] - proj[:, None] * (K @ v)[None]
    keep = [t for t in range(k) if t != i]
    ki = torch.tensor(keep, device=S.device)
    col = Ginv[ki, i]
    Gm = Ginv[ki][:, ki] - torch.outer(col, col) / Ginv[i, i]  # (k-1, k-1) inverse Gram without i
    Sm = S[ki]
    x = st["Xc"][jj]  # (d,)
    bvec = Sm @ x  # (k-1,)
    g = Gm @ bvec
    top = Gm + torch.outer(g, g) / s
    Ginv_new = torch.cat([torch.cat([top, -g[:, None] / s], 1),
                          torch.cat([-g[None] / s, torch.full((1, 1), 1.0 / s, dtype=S.dtype, device=S.device)], 1)])
    Kx = K @ x  # (d,)
    Wm = W[ki][:, ki]
    wcol = Sm @ Kx  # (k-1,)
    st["W"] = torch.cat([torch.cat([Wm, wcol[:, None]], 1),
                         torch.cat([wcol[None], (x @ Kx).reshape(1, 1)], 1)])
    st["S"] = torch.cat([Sm, x[None]])
    st["Ginv"] = Ginv_new


def _error(A: Tensor, K: Tensor, kept: list[int]) -> float:
    """||A - P_S A||_F^2 in float64 with a rank-revealing basis of the kept rows (SVD)."""
    S = A[kept].double()
    _, sv, vh = torch.linalg.svd(S, full_matrices=False)
    B = vh[: int((sv > 1e-10 * sv[0]).sum())].T if sv.numel() and sv[0] > 0 else S.new_zeros(S.shape[1], 0)
    return float(torch.trace(K) - (B * (K @ B)).sum())


def _repair(A: Tensor, kept: list[int]) -> list[int]:
    """Replace kept rows that add (numerically) nothing to the span of the others by greedy picks."""
    S = A[kept].clone()  # (k, d)
    k = len(kept)
    top = float(A.pow(2).sum(dim=1).max()) if A.numel() else 0.0
    picks, Q, _ = greedy_residual(S, k, zero_energy=ZERO_TOL * top)
    if picks.numel() == k:
        return kept
    good = [kept[p] for p in sorted(picks.tolist())]
    mask = torch.ones(A.shape[0], dtype=torch.bool, device=A.device)
    mask[kept] = False
    rest = mask.nonzero().reshape(-1)
    R = A[rest].clone()
    R -= (R @ Q) @ Q.T
    R -= (R @ Q) @ Q.T
    more, _, _ = greedy_residual(R, k - len(good), Q, zero_energy=ZERO_TOL * top)
    add = rest[more].tolist()
    # rank exhausted: keep the original dependent rows to hold the size
    dep = [r for r in kept if r not in set(good)]
    fill = add + dep[: k - len(good) - len(add)]
    res, it = [], iter(fill)
    goods = set(good)
    for r in kept:
        res.append(r if r in goods else next(it))
    return res
