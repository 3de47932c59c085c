"""Weighted greedy residual selection (= column-pivoted QR on the rows of X), docs/design.md §3.1."""

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


DRIFT = 1e-2  # downdated energies are trusted while the pick's energy stays above DRIFT x the last exact max
_BLOCK_MIN, _BLOCK_MAX = 4, 256  # picks between two looks of the host at the device-side flags
_C_STORE_MAX = 1 << 26  # floats of stored coefficients (n x m) allowed beyond the size of A
REORTH = False  # a second Gram-Schmidt pass per pick against the whole round (tests / experiments)


def energies64(W: Tensor, chunk: int = 1 << 18) -> Tensor:
    """Squared row norms of W (n, d) float32 accumulated in float64, (n,); chunks of ~chunk entries."""
    n, d = W.shape
    out = torch.empty(n, dtype=torch.float64, device=W.device)
    rows = max(1, min(n, chunk // max(d, 1)))
    buf = torch.empty(rows, d, dtype=torch.float64, device=W.device)
    for s in range(0, n, rows):
        b = buf[: min(rows, n - s)].copy_(W[s: s + rows])
        torch.linalg.vector_norm(b, dim=1, out=out[s: s + rows])
    return out.square_()


def select_subspace(X: Tensor, k: int, weights: Tensor | None = None) -> Tensor:
    """Rows of X (n, d) in greedy residual order; returns (min(k, n),) distinct int64 indices (X's device).

    Pick order = pivot order of scipy.linalg.qr(X.T * sqrt(w), pivoting=True) on well-conditioned input:
    each step takes the row with the largest residual energy w_i ||x_i - Q Q^T x_i||^2 (float32, ties:
    smallest index). Tie rule at zero residual: once every unpicked row's residual energy is <= 1e-9 x the
    largest weighted row energy (the rank is exhausted, e.g. k > rank or k > d), the basis is reset and
    greedy continues on the unpicked rows from scratch (a new round); rows with zero weighted norm come last
    in index order. Raises ValueError on non-2-D / non-finite X, bad weights or k < 0.

    Kernel (left-looking pivoted QR; float32 products whatever X's dtype): one pass over W (= A = sqrt(w) X,
    or A's exact residual at the last exact point) per pick, c = W q, and the residual energies e (float32;
    exact float64 sums at each exact point) are downdated, e -= c^2. The new direction q is the picked row
    minus one classical Gram-Schmidt pass against the round's basis, whose coefficients on the directions
    since the last exact point are the stored c's (gathered, not recomputed: one read of Q per pick) and,
    after a restart, freshly computed on the older directions (W is only numerically orthogonal to them).
    One pass suffices because the cancellation is bounded: every pick that stands keeps more than
    sqrt(DRIFT) of its row's norm at the last exact point (REORTH = True adds a second pass, for checks).
    Argmax and pivots stay on the device; the host reads device-side flags once per block of picks (4..256:
    half the picks left before the drift threshold at the energies' current rate of decay): one sync per
    block, not per pick. A pick whose exact residual energy ||q before normalisation||^2 is <= max(DRIFT x
    the largest energy at the last exact point, zero threshold) flags its block: the block is rolled back to
    that pick, W becomes the exact residual against the basis (one matmul) and e is recomputed from it; an
    exact maximum <= the zero threshold starts a new round (W = A, fresh basis).
    """
    if not isinstance(X, Tensor) or X.ndim != 2 or X.is_complex() or X.dtype == torch.bool:
        check_matrix(X)  # raises the ValueError
    X = X.float()
    n = X.shape[0]
    k = min(check_k(k), n)
    A = X if weights is None else X * check_weights(weights, n, X.device).sqrt()[:, None]  # (n, d)
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=A.device)
    norms = energies64(A)  # (n,) float64
    top_t = norms.max()
    alive = norms > ZERO_TOL * top_t  # rows with non-zero energy
    top, n_alive = torch.stack([top_t, alive.sum().double()]).tolist()  # the one sync of the setup
    if not math.isfinite(top):  # X has NaN / Inf (or its energies overflow): check X itself
        check_matrix(X)
    zero = ZERO_TOL * top
    out = torch.empty(k, dtype=torch.long, device=A.device)
    m = min(k, int(n_alive))
    if m:
        _greedy_rounds(A, norms, alive, m, zero, top, out)
    if m < k:  # zero rows last, in index order
        out[m:] = (~alive).nonzero().reshape(-1)[: k - m]
    return out


def _greedy_rounds(A: Tensor, norms: Tensor, alive: Tensor, m: int, zero: float, top: float, picks: Tensor):
    """The first m picks of select_subspace (all among the alive rows) into picks[:m], in place."""
    n, d = A.shape
    Q = A.new_empty(m, d)  # (m, d) basis rows; the current round is Q[r0:i]
    # Ct[t] = c = W q_t (m, n): column j holds the coefficients of W's row j on the directions since the last
    # exact point, so a pick's Gram-Schmidt pass gathers them instead of reading Q for them. Not stored past
    # max(A, _C_STORE_MAX) floats: the coefficients then come from Q (one more pass over it per pick) and
    # restarts from a matmul.
    Ct = A.new_empty(m, n) if m * n <= max(n * d, _C_STORE_MAX) else None
    cbuf = A.new_empty(n) if Ct is None else None  # (n,) c of the current pick when Ct is not stored
    hbuf = A.new_empty(min(m, d))  # (<= d,) coefficients of the picked row on the round's basis
    rho = A.new_empty(m)  # (m,) exact residual norm of each pick when taken
    vbuf = A.new_empty(1, d)  # (1, d) the picked row, then its new direction before normalisation
    v = vbuf[0]
    q_rows, rho_at, p_at = Q.unbind(0), rho.unbind(0), picks.split(1)
    # residual energies e (n,) float32: exact (float64 sums) at an exact point, then downdated e -= c^2; their
    # rounding (~1e-7 e per downdate) stays below that of the float32 products c themselves
    base = norms.float().masked_fill_(~alive, -math.inf)  # energies at the start of a round (picked: -inf)
    e = base.clone()
    W, R = A, None  # W: rows' residuals against Q[r0:since] (A itself until the round's first restart)
    r0 = since = i = 0
    eref = top  # largest exact energy at the last exact point
    exact = True  # energies at step i are exact (the block's first flag is then ignored)
    P = 32
    while i < m:
        if i - r0 >= d:  # a round holds at most d directions
            r0 = since = i
            W, e = A, base.clone().index_fill_(0, picks[:i], -math.inf)
            eref, exact = float(e.max()), True
        steps = min(P, m - i, r0 + d - i)
        for t in range(i, i + steps):
            jv = p_at[t]
            torch.argmax(e, dim=0, keepdim=True, out=jv)
            torch.index_select(W, 0, jv, out=vbuf)
            if t > r0:
                # one classical Gram-Schmidt pass against the round's basis, v -= Q[r0:t]^T h, where h holds
                # the row's stored coefficients on Q[since:t] (= W q, exact up to rounding) and, fresh, its
                # (tiny: W is the residual there) coefficients on Q[r0:since]: one pass over Q[since:t], two
                # over Q[r0:since]. Cancellation is bounded: ||w_j|| <= sqrt(eref) and every pick that stands
                # has ||v|| > sqrt(DRIFT eref), so ||w_j|| / ||v|| < 1 / sqrt(DRIFT).
                Qr, h = Q[r0:t], hbuf[: t - r0]
                if Ct is None:
                    torch.mv(Qr, v, out=h)
                else:
                    if since > r0:
                        torch.mv(Q[r0:since], v, out=h[: since - r0])
                    if t > since:
                        torch.index_select(Ct[since:t], 1, jv, out=h[since - r0:].view(-1, 1))
                v.addmv_(Qr.t(), h, alpha=-1.0)
                if REORTH:
                    v.addmv_(Qr.t(), torch.mv(Qr, v), alpha=-1.0)
            torch.linalg.vector_norm(v, out=rho_at[t])
            torch.div(v, rho_at[t] if t > i else rho_at[t].clamp_min(1e-30), out=q_rows[t])
            c = cbuf if Ct is None else Ct[t]
            torch.mv(W, q_rows[t], out=c)
            # no masking of row j: its downdated energy is ~0 now (c_j = rho), and a pick of an already
            # picked row has rho ~ eps ||w_j|| < thr, so it is flagged and rolled back like any drift
            e.addcmul_(c, c, value=-1.0)
        thr = math.sqrt(max(DRIFT * eref, zero))
        blk = rho[i + exact: i + steps]
        low = torch.cat([blk <= thr, blk.new_ones(1, dtype=torch.bool)])
        first, e0, e1 = torch.stack([low.to(torch.uint8).argmax().to(rho.dtype), rho[i], rho[i + steps - 1]]).tolist()
        first = int(first) + exact
        if first >= steps:  # the whole block stands
            i += steps
            exact = False
            # next block: half the picks the energies' decay over this block says are left before the drift
            # threshold (linear extrapolation; greedy energies fall ever slower, so it errs short), at most
            # twice this block; a flag costs the rest of its block
            rate = (e0 * e0 - e1 * e1) / (steps - 1) if steps > 1 else 0.0
            ahead = (e1 * e1 - thr * thr) / rate if rate > 0 else math.inf
            P = max(_BLOCK_MIN, min(2 * P, _BLOCK_MAX, int(ahead / 2) if math.isfinite(ahead) else _BLOCK_MAX))
            continue
        # pick i + first came out below the drift threshold: roll back to it, recompute exactly
        i += first
        if i > since:
            Qs = Q[since:i]
            Cs = Ct[since:i].T if Ct is not None else torch.mm(W, Qs.T)  # (n, i - since)
            if R is None:
                R = torch.empty_like(A)
            if W is A:
                torch.addmm(A, Cs, Qs, alpha=-1.0, out=R)
            else:
                R.addmm_(Cs, Qs, alpha=-1.0)
            W = R
        e = energies64(W).float().masked_fill_(~alive, -math.inf)
        e.index_fill_(0, picks[:i], -math.inf)
        emax = float(e.max())
        if emax <= zero:  # rank exhausted: a new round on the unpicked rows
            r0 = i
            W, e = A, base.clone().index_fill_(0, picks[:i], -math.inf)
            emax = float(e.max())
        since, eref, exact, P = i, emax, True, _BLOCK_MIN


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
