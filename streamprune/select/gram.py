"""Greedy selection from a maintained Gram matrix: pivoted Cholesky with an exact row-kernel finish.

The streaming selector can keep G = X X^T of its memory tokens X (m, d) (one (p, cap) matmul per push). The
weighted greedy of `select_subspace(X, k, w)` (= column-pivoted QR on the rows of sqrt(w) X) is then a
pivoted Cholesky factorisation G ~ L L^T whose pivot j maximises the weighted residual energy w_j e_j, e_j =
G_jj - ||L_j||^2: in exact arithmetic the same pivot order, at ~m k^2 / 2 multiply-adds for k picks instead of
~m d k (one pass over the m x d rows per pick). Rows with w_j = 0 never pivot, so the factor is that of the
unweighted G: a second weighting (SPARE's anti-relevance phase) continues the same factor.

Numerics: a Gram squares the condition number. A float32 G holds each entry to ~eps ||x_i|| ||x_j||, so a
residual energy computed from it is off by up to ~c eps max_i w_i G_ii (c grows slowly with d and the picks).
The Cholesky phase therefore stops as soon as a pick's weighted energy is <= GRAM_TOL x the largest weighted
diagonal entry, or is not finite (negative, NaN): from that pick on the exact residual rows of the candidates
(X minus its projection on the round's picks, two Gram-Schmidt passes) go to the row kernel (`select_subspace`
on them), whose float32 residuals resolve energies down to ZERO_TOL x top. Round rules match select_subspace:
a round holds at most d picks and ends when the exact largest residual energy is <= ZERO_TOL x top; the next
round starts afresh on the unpicked rows; zero-energy rows come last in index order.

Device-side: argmax, gathers and masks stay on the tensor's device; the host reads one flag vector per block of
picks (16 .. 256 picks). No device-specific code. The Gram's products must be full float32 (torch's default):
with TF32 matmuls enabled on CUDA (torch.backends.cuda.matmul.allow_tf32) its entries hold only ~1e-3 and
GRAM_TOL no longer bounds the error (the row kernel's own products are then TF32 as well).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .greedy import ZERO_TOL, check_k, check_matrix, check_weights, energies64, select_subspace

GRAM_TOL = 2.0 ** -12  # Cholesky energies are trusted while w_j e_j > GRAM_TOL x max_i w_i G_ii (float32 G)
_BLOCK_MIN, _BLOCK_MAX = 16, 256  # picks between two host looks at the flags


def gram_update(G: Tensor, X: Tensor, slots: Tensor) -> None:
    """Refresh rows and columns `slots` (p,) of G (cap, cap) after X[slots] changed: G[s, :] = X[s] X^T and
    G[:, s] = its transpose (one (p, d) x (d, cap) matmul, float32 accumulation at least). Rows of slots that
    are not alive may hold stale values; readers restrict G to alive slots."""
    if slots.numel() == 0:
        return
    B = torch.mm(X.index_select(0, slots), X.T).to(G.dtype)  # (p, cap)
    G.index_copy_(0, slots, B)
    G.index_copy_(1, slots, B.T)


def check_gram(G: Tensor, m: int, index: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """G (m, m), or (c, c) with index (m,) int64 in [0, c): validated; G as float32 / float64."""
    if not isinstance(G, Tensor) or G.ndim != 2 or G.shape[0] != G.shape[1]:
        raise ValueError(f"G must be a square 2-D tensor, got {getattr(G, 'shape', type(G).__name__)}")
    if not G.is_floating_point():
        raise ValueError(f"G must be a floating tensor, got {G.dtype}")
    if index is None:
        if G.shape[0] != m:
            raise ValueError(f"G must be ({m}, {m}) for {m} rows, got {tuple(G.shape)}")
    else:
        if not isinstance(index, Tensor) or index.ndim != 1 or index.numel() != m or index.is_floating_point():
            raise ValueError(f"index must be a 1-D integer tensor of {m} entries")
        index = index.to(device=G.device, dtype=torch.long)
        if m and (int(index.min()) < 0 or int(index.max()) >= G.shape[0]):
            raise ValueError(f"index must lie in [0, {G.shape[0]})")
    return (G if G.dtype in (torch.float32, torch.float64) else G.float()), index


class _Chol:
    """Pivoted Cholesky of the current round: Lt (kmax, m) holds the factor's columns as rows (Lt[t] = L[:, t]),
    s (m,) the weighted residual energies w_i e_i (-inf: not a candidate). Row i of the Gram is G[index[i]]
    restricted to the columns index (index None: G is (m, m) itself), so a slot-indexed Gram needs no gather."""

    def __init__(self, G: Tensor, index: Tensor | None, kmax: int, avail: Tensor, w: Tensor):
        self.G, self.index = G, index
        diag = torch.diagonal(G)
        self.diag = diag if index is None else diag.index_select(0, index)  # (m,)
        self.Lt = G.new_zeros(kmax, self.diag.numel())  # (kmax, m)
        self.r = 0  # columns in the factor (picks of this round)
        self.reweight(w, avail)

    def reweight(self, w: Tensor, avail: Tensor):
        """New weights w (m,) and candidates avail (m,) on the current factor (SPARE's second phase)."""
        e = self.diag - self.Lt[: self.r].pow(2).sum(dim=0) if self.r else self.diag  # (m,)
        self.w, self.avail = w, avail.clone()
        self.s = torch.where(avail, w * e, -math.inf)

    def steps(self, count: int, picks: Tensor, score_at: Tensor):
        """`count` pivots: picks[t] and score_at[t] = w_j e_j when taken (device tensors, no host sync). A pick
        whose score is <= 0 or NaN leaves garbage behind it; the caller rolls back to it."""
        G, index, Lt, s, w = self.G, self.index, self.Lt, self.s, self.w
        for t in range(count):
            jv = picks[t: t + 1]
            torch.argmax(s, dim=0, keepdim=True, out=jv)
            torch.index_select(s, 0, jv, out=score_at[t: t + 1])
            r = self.r
            row = Lt[r: r + 1]  # (1, m)
            if index is None:
                torch.index_select(G, 0, jv, out=row)
            else:
                torch.index_select(G.index_select(0, index.index_select(0, jv)), 1, index, out=row)
            col = row[0]
            if r:
                col.addmv_(Lt[:r].T, Lt[:r].index_select(1, jv)[:, 0], alpha=-1.0)
            col.div_(score_at[t: t + 1].div(w.index_select(0, jv)).sqrt_())  # / sqrt(e_j)
            s.addcmul_(col, col * w, value=-1.0)
            s.index_fill_(0, jv, -math.inf)
            self.r = r + 1
        self.avail.index_fill_(0, picks[:count], False)


def _residual_rows(X: Tensor, basis_rows: Tensor, rows: Tensor) -> Tensor:
    """Exact float32 residuals of X[rows] against span(X[basis_rows]) (two Gram-Schmidt passes), (len(rows), d)."""
    R = X.index_select(0, rows)
    if basis_rows.numel():
        Q = torch.linalg.qr(X.index_select(0, basis_rows).T).Q  # (d, p)
        R = R - (R @ Q) @ Q.T
        R -= (R @ Q) @ Q.T
    return R


def _row_finish(X: Tensor, w: Tensor, basis_rows: Tensor, avail: Tensor, k: int, zero: float) -> tuple[Tensor, bool]:
    """Continue a round exactly with the row kernel: up to k more picks among avail rows, against the round's
    picks basis_rows. Returns (picks (p,) row ids, exhausted: the round's exact largest energy fell to zero)."""
    rows = avail.nonzero().reshape(-1)  # (c,)
    R = _residual_rows(X, basis_rows, rows) * w.index_select(0, rows).sqrt()[:, None]  # (c, d) weighted
    en = R.double().pow(2).sum(dim=1)
    live = en > zero
    n_live = int(live.sum())
    if n_live == 0:
        return rows[:0], True
    kk = min(k, n_live)
    order = select_subspace(R, kk)  # (kk,) greedy order of the exact residual rows
    # the round continues while each pick's exact residual energy (against the earlier ones) exceeds zero;
    # select_subspace's own rounds (its zero is relative to R's top) are cut there
    Rf = torch.linalg.qr(R.index_select(0, order).T.double(), mode="r").R
    ok = torch.diagonal(Rf).square() > zero
    cut = int(torch.cat([~ok, ok.new_ones(1)]).to(torch.uint8).argmax())
    return rows[order[:cut]], cut < kk or kk < k


def gram_greedy(X: Tensor, G: Tensor, k: int, weights: Tensor | None = None, *, index: Tensor | None = None,
                tol: float = GRAM_TOL, state: dict | None = None, extra: int = 0, stats: dict | None = None) -> Tensor:
    """Same contract (and, on well-conditioned input, the same picks) as `select_subspace(X, k, weights)`,
    computed from G = X X^T (m, m), or with index (m,) int64 from a larger G whose row / column index[i] is
    X's row i (a slot-indexed Gram, read without a gather): pivoted Cholesky while its energies are reliable
    (w_j e_j > tol x max_i w_i G_ii), then the row kernel on the exact residual rows. X (m, d) is read for
    the rows' energies and the fallback only.
    state: if a dict is given, it receives the factor of the last round ("chol"), its picks ("round") and
    whether the last round was finished by rows or exhausted ("exact"): SPARE's second phase continues from it
    (extra: factor rows reserved for that). stats: if a dict is given, "row_finishes" (exact row-kernel
    finishes run) and "cholesky_picks" (picks before the first one) are added to it.
    Raises ValueError on bad X, G, index, weights, k or tol."""
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0, got {tol}")
    X = check_matrix(X)
    m, d = X.shape
    G, index = check_gram(G, m, index)
    k = min(check_k(k), m)
    w = torch.ones(m, device=X.device) if weights is None else check_weights(weights, m, X.device)
    wd = w.to(G.dtype)
    out = torch.empty(k, dtype=torch.long, device=X.device)
    if m == 0 or k == 0:
        if state is not None:
            state.update(chol=None, round=out[:0], exact=True)
        return out
    # weighted energies as select_subspace computes them (float64 sums of the rows): alive rows, top, zero
    norms = energies64(X) * w.double()  # (m,)
    top_t = norms.max()
    alive = norms > ZERO_TOL * top_t
    top, n_alive = torch.stack([top_t, alive.sum().double()]).tolist()
    if not math.isfinite(top):
        check_matrix(X)
    zero = ZERO_TOL * top
    diag = torch.diagonal(G) if index is None else torch.diagonal(G).index_select(0, index)
    gtop = float((wd * diag).max())  # the Gram's own scale for the reliability threshold
    thr = tol * gtop
    n_pick = min(k, int(n_alive))
    avail = alive.clone()
    i = 0
    chol, rnd, exact = None, out[:0], True
    while i < n_pick:
        # a new round on the unpicked alive rows
        cap = min(d, n_pick - i)
        chol = _Chol(G, index, cap + extra, avail, wd)
        r0 = i
        P = _BLOCK_MIN
        exact = False
        score = G.new_empty(cap)
        while chol.r < cap:
            steps = min(P, cap - chol.r)
            t0 = chol.r
            chol.steps(steps, out[i: i + steps], score[t0: t0 + steps])
            sc = score[t0: t0 + steps]
            bad = ~(sc > thr)  # NaN / negative / unreliable
            first = int(torch.cat([bad, bad.new_ones(1)]).to(torch.uint8).argmax())  # one sync per block
            if first < steps:  # roll back to the first unreliable pick
                chol.r = t0 + first
                chol.avail = avail.clone()
                chol.avail[out[r0: i + first]] = False
                i += first
                break
            i += steps
            P = min(2 * P, _BLOCK_MAX)
        avail = chol.avail
        rnd = out[r0:i]
        if chol.r == cap:
            if i - r0 >= d:  # round full: the next round starts afresh
                continue
            break  # k picks
        # the Cholesky energies became unreliable: finish this round exactly with the row kernel
        _count(stats, i)
        more, exhausted = _row_finish(X, w, rnd, avail, min(cap - chol.r, n_pick - i), zero)
        p = more.numel()
        out[i: i + p] = more
        avail[more] = False
        i += p
        rnd = out[r0:i]
        exact = True
        if not exhausted and i - r0 < d and i < n_pick:
            # cannot happen (the row kernel returns the picks asked for unless exhausted); guard the loop
            raise RuntimeError("gram_greedy: row finish returned too few picks")
    if n_pick < k:  # zero rows last, in index order
        out[n_pick:] = (~alive).nonzero().reshape(-1)[: k - n_pick]
    if state is not None:
        state.update(chol=None if exact else chol, round=rnd, exact=exact, avail=avail)
    return out


def _count(stats: dict | None, picks_before: int):
    if stats is not None:
        stats["row_finishes"] = stats.get("row_finishes", 0) + 1
        stats.setdefault("cholesky_picks", picks_before)


def gram_question_select(X: Tensor, G: Tensor, k: int, relevance: Tensor | None = None, *,
                         mode: str = "resprune", alpha: float = 0.3, beta: float = 1.0, spare_frac: float = 0.25,
                         index: Tensor | None = None, tol: float = GRAM_TOL, stats: dict | None = None) -> Tensor:
    """`relevance.question_select(X, k, relevance, ...)` from G = X X^T (m, m): same contract and, on
    well-conditioned input, the same picks. SPARE's second phase continues the first phase's Cholesky factor
    with the anti-relevance weights (when the first phase ended inside one round on Cholesky energies; else it
    runs on exact residual rows as question_select does). index, stats: as in gram_greedy."""
    from .relevance import MODES, check_relevance, spare_second

    X = check_matrix(X, "tokens")
    m, d = X.shape
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not (math.isfinite(alpha) and alpha >= 0 and math.isfinite(beta) and beta >= 0 and 0 <= spare_frac <= 1):
        raise ValueError("need alpha >= 0, beta >= 0 and 0 <= spare_frac <= 1")
    G, index = check_gram(G, m, index)
    k = min(check_k(k), m)
    if relevance is None or mode == "none":
        return gram_greedy(X, G, k, index=index, tol=tol, stats=stats)
    r = check_relevance(relevance, m, X.device)
    if mode == "relevance":
        return torch.sort(-r, stable=True).indices[:k]
    w = r.pow(alpha)
    k_anti = round(spare_frac * k) if mode == "spare" else 0
    k1 = k - k_anti
    st: dict = {}
    first = gram_greedy(X, G, k1, w, index=index, tol=tol, state=st, extra=min(k_anti, d), stats=stats)
    if k_anti == 0:
        return first
    chol = st["chol"]
    if chol is None or st["round"].numel() != k1 or k1 >= d:
        return torch.cat([first, spare_second(X, r, first, k_anti, beta)])
    # the factor of span(X[first]) is at hand: continue it with weights w2 on the other rows
    in_first = torch.zeros(m, dtype=torch.bool, device=X.device)
    in_first[first] = True
    w2 = torch.where(in_first, 0.0, (1.0 - r).clamp_min(1e-3).pow(beta))  # (m,)
    wd2 = w2.to(G.dtype)
    rest_e = energies64(X) * w2.double()
    zero2, gtop = torch.stack([ZERO_TOL * rest_e.max(), (wd2 * chol.diag).max().double()]).tolist()
    thr = tol * gtop
    cap = min(k_anti, d - k1)
    chol.reweight(wd2, ~in_first)
    picks = torch.empty(cap, dtype=torch.long, device=X.device)
    score = G.new_empty(cap)
    i, P = 0, _BLOCK_MIN
    while i < cap:
        steps = min(P, cap - i)
        chol.steps(steps, picks[i: i + steps], score[i: i + steps])
        sc = score[i: i + steps]
        bad = ~(sc > max(thr, zero2))
        first_bad = int(torch.cat([bad, bad.new_ones(1)]).to(torch.uint8).argmax())  # one sync per block
        i += min(first_bad, steps)
        if first_bad < steps:
            break
        P = min(2 * P, _BLOCK_MAX)
    second = picks[:i]
    if i < cap:  # unreliable (or zero) energies: finish exactly on the residual rows, cut at zero2
        _count(stats, k1 + i)
        avail = ~in_first
        avail[second] = False
        more, _ = _row_finish(X, w2, torch.cat([first, second]), avail, cap - i, zero2)
        second = torch.cat([second, more])
    if second.numel() < k_anti:  # rank exhausted: fill by a fresh greedy round on the rest
        left = ~in_first
        left[second] = False
        rows = left.nonzero().reshape(-1)
        sub = rows if index is None else index.index_select(0, rows)  # their rows of G
        more = rows[gram_greedy(X.index_select(0, rows), G, k_anti - second.numel(), w2[rows], index=sub, tol=tol,
                                stats=stats)]
        second = torch.cat([second, more])
    return torch.cat([first, second])
