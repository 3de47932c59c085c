"""Streaming subspace selection with a fixed token budget K (docs/design.md §3.2), in block-level arithmetic.

Each pushed block (n tokens) costs one projection on the current segment's orthonormal basis Q (d, r):
R = A - (A Q) Q^T. The block's greedy picks (`select_subspace` on R, cut where the residual energy falls to
the gate) enter at once: their new directions come from one QR of the picked residual rows (block
Gram-Schmidt) plus one re-orthogonalisation pass against Q, and the segment's Gram inverse G^-1 (G = S S^T
of its kept tokens S) gets one block Schur-complement update. The loss of evicting kept token j is the part
of it the other kept tokens of its segment do not explain, 1 / (G^-1)_jj; once the memory holds more than K
tokens, the cheapest are evicted several at a time (candidates of one segment whose Gram-inverse entries are
strongly coupled wait for the next round, so a redundant pair does not leave together) and each segment gets
one downdate per round: one block Householder reflection of Q (geqrf / ormqr) and one block downdate of
G^-1. Segments (the K >= d trap): a new segment starts when a block's unexplained energy fraction exceeds
`segment_novelty` or the current segment's rank reaches `segment_rank` (default d // 2 when K > d // 2).
All segments live in one arena (`_Arena`), packed in place; the push that can fill the memory sizes it and
the token slots for good, so the bytes held are flat from memory-full on (`memory_bytes`).

The budget is spent: while the memory holds fewer than K tokens, the block's tokens the basis does not need
are kept as well ("fill" tokens), so the memory holds min(K, tokens seen) tokens (zero rows excepted).

Fill policy, fill="local" (default): basis tokens hold at most floor(basis_share x K) places of a full memory
(default 0.5; above it they give way to fill, cheapest loss first), the rest is fill, chosen for local
reconstruction rather than novelty. Fill tokens are the *representative* rows (`representative`: weighted
greedy column-subset selection on unit rows, i.e. the rows that explain most of the others' directions, the
metric of bench.metrics.local_reconstruction) of their fill bin (width: the smallest power of two giving at
most min(K_f, max(FILL_BINS, K_f / FILL_PER_BIN)) bins, K_f = K - basis cap: one bin per fill place at small
budgets, FILL_BINS bins up to K_f = 256, above that bins of FILL_PER_BIN places, which bounds the selection's
pool; only grows). Each push, the block's leftover rows compete with the bin's replaceable fill tokens
(weights = their mass, the energy they explained when chosen) for the bin's places: the free room, the bins'
fill places and the basis tokens above the cap. The fill places level the memory in time: K_f (= K - the basis
tokens, at most the cap) places are poured over the fill bins spanned by water filling on each bin's load,
BASIS_DENSITY (0.35) per basis token in it, so that fill + 0.35 x basis is as even as it can be (a basis
token, picked for novelty, explains its neighbours less than a representative fill token, so a stretch rich in
basis tokens still gets most of its fill; at 0, every bin would get the same places). What the selection
explains is the residual against the kept tokens that stay: the basis and protected tokens of the block's fill
bins and every kept token of the two adjacent fill bins (a window of the local metric straddles a bin edge, so
a bin's picks complement its neighbours'). Once full, a row within |cos| > DUPLICATE_COS of a kept basis token
may not take a place (it brings no direction the memory lacks). Eviction of fill then takes one at a time from
the fill bin with the largest load (fill + 0.35 x basis tokens), the least massive of the bin first.
fill="spread" is the previous policy: fill in greedy (novelty) order of the block, fill evicted before any
basis token, most crowded coverage bins first, and no basis cap.

Temporal coverage: time is cut into bins of width b seconds (b = the smallest power of two, in seconds, that
cuts the stream seen so far into at most max(1, coverage x K) bins; b only grows, so bins nest); every bin
that received a non-zero token keeps at least one kept token (the one with the largest loss, never evicted
while it is its bin's only representative: a block whose bin has no kept token adds its largest token).
Hence W = 2 b: when the times are non-decreasing, no stretch longer than max(W, the spacing of the pushed
times) inside the stream has no kept token. With coverage = 0.5 (default) W <= 4 x duration / K. One exception: when the memory holds
basis tokens only (no fill token to give up), a coverage pick that nearly duplicates a kept token (|cos| >
0.99) is skipped rather than evict a basis direction (its stretch is represented by that token's content).

Math in float32 (tokens, bases, projections); Gram inverses in float64 (eviction losses of near-dependent
tokens need it). Host syncs: a constant number per push (block statistics, pick counts, eviction rounds),
none per token. No device-specific code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .gram import gram_greedy, gram_question_select, gram_update
from .greedy import ZERO_TOL, check_budget, check_k, check_matrix, check_weights, refine_swaps, select_subspace
from .recycle import density_peak_merge

COUPLING = 0.5  # |G^-1_ij| / sqrt(G^-1_ii G^-1_jj) above this: i and j are not evicted in the same round
EVICT_ROUNDS = 8  # the last round evicts the cheapest remaining tokens without the coupling check
DUPLICATE_COS = 0.99  # coverage picks this close (|cos|) to a kept token do not evict a basis token
FILL_BINS = 32  # fill="local": the fill is cut into this many time bins (at most one per fill place) ...
FILL_PER_BIN = 8  # ... or, for a budget with more than FILL_BINS x this fill places, bins of this many places
BASIS_DENSITY = 0.35  # fill="local": where the fill is levelled in time, a basis token counts as this many fill
CSSP_FLOPS = 2 ** 28  # fill="local": above picks x pool^2 this, a pool's fill order comes from select_subspace
GRAM_MIN_BYTES = 12 * 2**20  # question_gram="auto": float32 memory tokens (K x d) at least this big
GRAM_MIN_SPEEDUP = 2.0  # ... and the Cholesky must save this factor over the row kernel at k = K / 4 (8 d / K)


def representative(Xn: Tensor, w: Tensor, k: int, pre: Tensor | None = None,
                   pickable: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Weighted greedy column-subset selection on rows: picks, one at a time, the row c of Xn (m, d) that
    most increases sum_i w_i ||P x_i||^2 (P = projection on the picked rows, after the rows of pre (p, d)
    are projected out), i.e. the most representative row, not the most novel one. Returns (order (k',),
    gains (k',) float64: the weighted energy each pick explained when taken, the pick's "mass"),
    k' = min(k, m): once the rows' span is exhausted the rest follow by weight with gain 0. pickable (m,)
    bool: only these rows may be picked; all rows count in the sum. Picks past the pickable rows are no picks:
    their gain is -inf (their index is meaningless). No host sync."""
    X = Xn.double()  # (m, d)
    if pre is not None and pre.shape[0]:
        P = pre.double()  # (p, d)
        G = P @ P.T  # (p, p); a small ridge keeps near-dependent rows solvable
        G.diagonal().add_(1e-10 * G.diagonal().mean() + 1e-300)
        X = X - torch.linalg.solve(G, P @ X.T).T @ P  # residual against span(pre)
    C = X @ X.T  # (m, m) residual Gram, downdated in place pick by pick
    w = w.double()
    m = C.shape[0]
    tiny = 1e-9  # rows are unit vectors: a residual energy below this is nil
    # num_j = sum_i w_i C_ij^2 and dg = diag(C), kept current with each rank-1 downdate C -= b c c^T
    # (b = 1 / c_j): num_j -= 2 b c_j (C (w c))_j - b^2 c_j^2 (c^T (w c)): one matvec and one in-place
    # rank-1 update per pick, no (m, m) temporaries
    num = (w[:, None] * C.square()).sum(dim=0)  # (m,)
    dg = torch.diagonal(C).clone()  # (m,)
    blocked = torch.zeros(m, dtype=torch.bool, device=C.device)  # taken, or not pickable
    if pickable is not None:
        blocked |= ~pickable
    nil = w / (1.0 + w) - 1.0  # (m,) the score of a row with no residual left: below every real gain
    picks, gains = [], []
    for _ in range(min(k, m)):
        sc = torch.where(dg <= tiny, nil, num.clamp_min(0.0) / dg.clamp_min(tiny)).masked_fill_(blocked, -math.inf)
        j = sc.argmax()
        g = torch.where(sc[j] > -math.inf, sc[j].clamp_min(0.0), -math.inf)  # -inf: nothing pickable left
        b = (g > 0).double() / dg[j].clamp_min(tiny)  # 0: nothing left to explain, no downdate
        c = C[:, j].clone()  # (m,)
        u = w * c  # (m,)
        v = C @ u  # (m,)
        num.add_(b * c * (b * c * (c @ u) - 2.0 * v))
        dg.addcmul_(c, c * b, value=-1.0)
        C.addr_(c * b, c, alpha=-1.0)
        blocked[j] = True
        picks.append(j)
        gains.append(g)
    if not picks:
        return torch.zeros(0, dtype=torch.long, device=C.device), torch.zeros(0, dtype=torch.float64, device=C.device)
    return torch.stack(picks), torch.stack(gains)


def water_fill(load: Tensor, total: float) -> Tensor:
    """(n,) float64 shares s_i = max(0, L - load_i) with sum(s) = total (>= 0): what `total` units poured over
    bins already holding load (n,) add to each, the level L as even as it can be."""
    load = load.double()
    srt = torch.sort(load).values
    j = torch.arange(1, load.numel() + 1, dtype=torch.float64, device=load.device)
    lev = (total + torch.cumsum(srt, 0)) / j  # (n,) the level if the j lowest bins take it all
    last = ((srt < lev).long().sum() - 1).clamp_min(0)  # the j lowest lie below their level
    level = lev.gather(0, last.reshape(1))  # (1,) (gather: no host sync)
    return (level - load).clamp_min(0.0)


def levelled_takes(load: Tensor, bins: Tensor, m: int) -> Tensor:
    """(n,) long: how many of the candidates to take from each bin, min(m, candidates) in all, one at a time
    from the bin with the largest load left (load (n,) minus one per take; ties: the earlier bin), i.e. the m
    largest of load_b - j over each bin's candidates j = 0, 1, ... bins (s,): each candidate's bin, in [0, n]
    (n: not a candidate). No host sync."""
    n = load.numel()
    sb = torch.sort(bins, stable=True).values  # (s,)
    one = torch.ones_like(sb)
    cnt = torch.zeros(n + 1, dtype=torch.long, device=sb.device).index_add_(0, sb, one)  # (not bincount: it syncs)
    j = torch.arange(sb.numel(), device=sb.device) - (torch.cumsum(cnt, 0) - cnt)[sb]  # rank within the bin
    ld = torch.cat([load.double(), load.new_full((1,), -math.inf, dtype=torch.float64)])
    top = torch.sort(j.double() - ld[sb], stable=True).indices[:m]  # ties: the earlier bin, then j
    return torch.zeros(n + 1, dtype=torch.long, device=sb.device).index_add_(0, sb[top], one[top])[:n]


def gram_auto(budget: int, d: int, *, recycle: bool = False, block: int = 256) -> bool:
    """question_gram="auto": keep the Gram of the memory where it pays at the question stage even when the
    question must rebuild it (gram_refresh="question" after a long stretch of pushes) and it costs at most as
    much memory as the rest of the selector. At k = K / 4 picks the row kernel reads m d k floats and the
    Cholesky m k^2 / 2 (~8 d / K times fewer); a rebuild is one K x (K + block) x d matmul, which beats the
    row kernel's passes only once the memory no longer stays in the CPU's cache (bench/RESULTS-gram.md: a
    full rebuild + Cholesky 1.7-2.0x faster at K x d = 1024 x 3584, 4096 x 1536, 4096 x 3584; 0.67x at 1024 x
    1536, 6 MiB). On when 4 K d >= GRAM_MIN_BYTES, 8 d / K >= GRAM_MIN_SPEEDUP and (K + min(block, K))^2
    float32 <= memory_bytes without it; off with recycling (merges change memory tokens outside `_store`)."""
    K = check_budget(budget)
    if recycle or 4 * K * int(d) < GRAM_MIN_BYTES or 8 * int(d) < GRAM_MIN_SPEEDUP * K:
        return False
    slots = K + min(max(1, int(block)), K)
    return 4 * slots * slots <= memory_bytes(K, d, recycle=recycle, block=block, question_gram=False)


@dataclass
class Memory:
    """The kept tokens, ordered by ids (arrival order)."""

    tokens: Tensor  # (k, d) float32
    times: Tensor  # (k,) float64 seconds
    ids: Tensor  # (k,) int64, index among all tokens ever pushed
    payload: Tensor | None  # (k, ...) or None

    def __len__(self) -> int:
        return int(self.ids.numel())


class Snapshots:
    """`memory` as one copy per state: gathered (`_gather`) on first use after a change (`_changed`, called
    by every push that adds tokens); later reads, and `final` through it, reuse the copy. Read-only: a caller
    that wants to modify it clones it. Also caches the question-agnostic `final` per (state, k)."""

    _version = 0
    _snap: tuple[int, Memory] | None = None
    _finals: dict | None = None

    def _changed(self):
        self._version += 1
        self._snap, self._finals = None, None

    def _gather(self) -> Memory:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def memory(self) -> Memory:
        if self._snap is None or self._snap[0] != self._version:
            self._snap = (self._version, self._gather())
        return self._snap[1]

    def _final(self, k: int, relevance, **kw) -> Tensor:
        """final_select on the snapshot; without relevance the answer is kept for this state and k."""
        if relevance is not None:
            return final_select(self.memory, k, relevance, **kw)
        key = (self._version, int(k), tuple(sorted(kw.items())))
        if self._finals is None:
            self._finals = {}
        if key not in self._finals:
            self._finals[key] = final_select(self.memory, k, None, **kw)
        return self._finals[key].clone()


class _Arena:
    """One allocation for every segment's buffers (S, Q and idx rows; Gram inverses in a flat float64 buffer),
    sized once for the memory's bound: the kept basis tokens of all segments are at most K + the picks of one
    block, so `rows` = K + min(block, K) + K // 4 (slack that spaces out compactions) hold them all, and the
    Gram inverses (each r x r, r <= rank cap) fit in min(rank cap, rows) x rows entries. Allocated at the first
    push (again only if a larger block arrives), never per segment: the selector's memory stays flat."""

    def __init__(self, rows: int, d: int, rank_cap: int, device):
        self.rows = rows
        self.S = torch.zeros(rows, d, device=device)  # (rows, d) weighted features of basis tokens
        self.Q = torch.zeros(rows, d, device=device)  # (rows, d) basis vectors as rows
        self.G = torch.zeros(min(rank_cap, rows) * rows, dtype=torch.float64, device=device)  # Gram inverses
        self.idx = torch.zeros(rows, dtype=torch.long, device=device)  # (rows,) member slots

    def tensors(self) -> tuple[Tensor, ...]:
        return self.S, self.Q, self.G, self.idx


def arena_rows(budget: int, block: int) -> int:
    return budget + min(block, budget) + budget // 4


class _Segment:
    """Kept basis tokens of one temporal segment: rows [off, off + cap) of the arena (weighted features S
    (r, d), orthonormal basis Q (d, r) with span(Q) = span(S), member slots idx (r,)) and a (cap, cap) block of
    its flat Gram-inverse buffer at goff (G^-1 (r, r) float64). Rows of S, G^-1 and idx are in insertion
    order; the columns of Q are any orthonormal basis of the span. Only the current segment grows; the
    selector packs the segments (closed ones to cap = r) when it runs out of room."""

    def __init__(self, sid: int, arena: _Arena, off: int, goff: int, cap: int):
        self.sid = sid
        self.r = 0
        self.place(arena, off, goff, cap)

    def place(self, arena: _Arena, off: int, goff: int, cap: int):
        """Point the views at rows [off, off + cap) and Gram block goff of `arena`, carrying the first r rows
        (and the r x r Gram inverse) over from where they were (ranges may overlap: copied through clones)."""
        r = self.r
        old = (self._S[:r].clone(), self._Q[:r].clone(), self._idx[:r].clone(),
               self._G[:r, :r].clone()) if r else None
        self.off, self.goff, self.cap = off, goff, cap
        self._S = arena.S[off: off + cap]  # (cap, d)
        self._Q = arena.Q[off: off + cap]  # (cap, d) basis vectors as rows: Q = _Q[:r].T
        self._G = arena.G[goff: goff + cap * cap].view(cap, cap)  # (cap, cap)
        self._idx = arena.idx[off: off + cap]  # (cap,)
        if old is not None:
            self._S[:r], self._Q[:r], self._idx[:r], self._G[:r, :r] = old

    @property
    def rank(self) -> int:
        return self.r

    @property
    def S(self) -> Tensor:
        return self._S[: self.r]  # (r, d)

    @property
    def Q(self) -> Tensor:
        return self._Q[: self.r].T  # (d, r), column-major (what BLAS / LAPACK take without a copy)

    @property
    def Ginv(self) -> Tensor:
        return self._G[: self.r, : self.r]  # (r, r)

    @property
    def idx(self) -> Tensor:
        return self._idx[: self.r]  # (r,)

    @property
    def slots(self) -> list[int]:
        """Member slots in insertion order (diagnostics; reads the device)."""
        return self.idx.tolist()


def check_times(time, n: int, device) -> Tensor:
    """Block time (float) or per-token times (n,) -> (n,) float64 finite."""
    t = torch.as_tensor(time, dtype=torch.float64)
    if t.ndim == 0:
        t = t.expand(n)
    t = t.reshape(-1).to(device)
    if t.numel() != n:
        raise ValueError(f"time has {t.numel()} entries for {n} tokens")
    if not torch.isfinite(t).all():
        raise ValueError("time contains NaN or Inf")
    return t.clone()


def check_block(tokens, time, weights, payload, *, d=None, device=None, payload_shape=None, has_payload=None):
    """Validate one pushed block against what earlier pushes fixed (d, payload row shape, whether payloads
    come at all; None before the first). Returns (X (n, d) float32, t (n,) float64, w (n,) or None, payload)
    on `device` (default: the tokens' device). Raises ValueError with the reason; changes nothing."""
    X = check_matrix(tokens, "tokens")
    n, dim = X.shape
    if dim == 0:
        raise ValueError("tokens have zero feature dimension")
    if d is not None and dim != d:
        raise ValueError(f"token dimension changed from {d} to {dim}")
    device = device or X.device
    X = X.to(device)
    t = check_times(time, n, device)
    w = check_weights(weights, n, device) if weights is not None else None
    if payload is not None:
        payload = torch.as_tensor(payload).to(device)
        if payload.ndim == 0 or payload.shape[0] != n:
            raise ValueError(f"payload must have {n} rows, got shape {tuple(payload.shape)}")
        if payload_shape is not None and tuple(payload.shape[1:]) != tuple(payload_shape):
            raise ValueError(f"payload row shape {tuple(payload.shape[1:])} != {tuple(payload_shape)}")
    if has_payload is not None and n and has_payload != (payload is not None):
        raise ValueError("payload must be given on every push or on none")
    return X, t, w, payload


class StreamingSelector(Snapshots):
    """Keeps at most `budget` tokens of a stream of blocks (the Selector protocol; see ARCHITECTURE.md).

    budget: K >= 1. The memory holds min(K, non-zero tokens seen) tokens after every push.
    novelty: a token enters a basis when its residual energy against the segment basis (and the block's
      earlier picks) exceeds novelty x the block's mean token energy and, once the memory is full with no
      fill token left to give up, the smallest eviction loss of the memory (so churn stays low).
    segment_novelty: None (default) or f: a block whose unexplained energy fraction vs the current segment
      exceeds f starts a new segment.
    segment_rank: rank cap per segment (default d // 2 when K > d // 2, else d: a basis of rank <= K < d/2
      cannot span R^d).
    coverage: fraction of the budget that temporal coverage may hold (0 disables it; see the module
      docstring: W = 2 b, b the smallest power-of-two bin width giving at most coverage x K bins).
    fill: "local" (default: representative fill tokens per fill bin, see the module docstring) | "spread"
      (the previous policy: novelty-order fill, no basis cap).
    basis_share: fill="local": the fraction of a full memory basis tokens may hold, in (0, 1] (default
      0.5: the most goals of the features suite held on every perturbed realisation; 1.0 kept all six needles
      of the long stream at K = 128 where 0.5 keeps five, for worse local reconstruction; see
      bench/RESULTS-features.md).
    recycle: None | "nearest" (each evicted token is merged, mass-weighted mean, into its most
      cosine-similar kept token) | "cluster" (the top recycle_frac of a push's evicted tokens by loss are
      density-peak clustered into ceil(m / 2) clusters, each merged into its nearest kept token). Merging
      changes only Memory.tokens, never the selection math, ids, times or payload.
    refresh_every: accepted for compatibility; unused (no periodic rebuild: block updates stay orthonormal,
      see the soak in bench/RESULTS-select.md).
    eviction: "leverage" (default; loss = the kept token's own unexplained energy 1/(G^-1)_jj, favours
      novelty) | "usage" (loss = (sum over the current segment's later blocks of each token's squared
      least-squares coefficient on j, plus 1) / (G^-1)_jj: the stream energy lost along j's unique
      direction, favours reconstruction of everything seen).
    question_mode, alpha: what final(k, relevance) uses (see relevance.question_select).
    final_refine: final(k) without relevance refines its greedy pick with swaps (greedy.refine_swaps).
    question_gram: True | False | "auto" (default): keep G = X X^T of the memory tokens (float32, slot-indexed,
      (cap, cap)) so that `final(k)` (with or without relevance) runs the greedy as a pivoted Cholesky of the
      weighted G (select.gram: same picks, exact row-kernel finish when the Gram's energies get unreliable).
      "auto" = `gram_auto(budget, d)` (resolved at the first push). Not with recycle (ValueError for True).
    gram_refresh: "question" (default): the first `final` after pushes computes the Gram rows of the tokens
      stored since the last refresh that are still kept, one (changed x cap x d) matmul: pushes pay nothing,
      a question after a long stretch of pushes pays up to a rebuild (K x cap x d, BLAS-3); "push": every
      push does that for the tokens it kept (a question then pays only the Cholesky; for live use where time
      to first token matters more than push time). Total work of "question" <= that of "push".
    Zero rows and zero-weight rows are skipped (never enter the basis or memory; they still get ids).
    Empty blocks are a no-op. Bad input raises ValueError and leaves the state untouched.
    Device: the first pushed tensor's (or `device`); nothing device-specific.
    """

    def __init__(self, budget: int, *, novelty: float = 0.01, segment_novelty: float | None = None,
                 segment_rank: int | None = None, recycle: str | None = None, recycle_frac: float = 0.3,
                 refresh_every: int = 256, eviction: str = "leverage", question_mode: str = "resprune",
                 alpha: float = 0.3, final_refine: bool = False, coverage: float = 0.5, fill: str = "local",
                 basis_share: float = 0.5, question_gram="auto", gram_refresh: str = "question", device=None):
        if not (math.isfinite(novelty) and novelty >= 0):
            raise ValueError(f"novelty must be a finite number >= 0, got {novelty}")
        if segment_novelty is not None and not (math.isfinite(segment_novelty) and segment_novelty > 0):
            raise ValueError(f"segment_novelty must be None or > 0, got {segment_novelty}")
        if segment_rank is not None and int(segment_rank) < 1:
            raise ValueError(f"segment_rank must be >= 1, got {segment_rank}")
        if eviction not in ("leverage", "usage"):
            raise ValueError(f"eviction must be 'leverage' or 'usage', got {eviction!r}")
        if recycle not in (None, "nearest", "cluster"):
            raise ValueError(f"recycle must be None, 'nearest' or 'cluster', got {recycle!r}")
        if not (math.isfinite(coverage) and 0 <= coverage <= 1):
            raise ValueError(f"coverage must be in [0, 1], got {coverage}")
        if fill not in ("local", "spread"):
            raise ValueError(f"fill must be 'local' or 'spread', got {fill!r}")
        if not (math.isfinite(basis_share) and 0 < basis_share <= 1):
            raise ValueError(f"basis_share must be in (0, 1], got {basis_share}")
        if question_gram not in (True, False, "auto"):
            raise ValueError(f"question_gram must be True, False or 'auto', got {question_gram!r}")
        if question_gram is True and recycle is not None:
            raise ValueError("question_gram=True does not work with recycle (merges change the memory tokens)")
        if gram_refresh not in ("push", "question"):
            raise ValueError(f"gram_refresh must be 'push' or 'question', got {gram_refresh!r}")
        self.question_gram, self.gram_refresh = question_gram, gram_refresh
        self.budget = check_budget(budget)
        self.novelty = float(novelty)
        self.segment_novelty = None if segment_novelty is None else float(segment_novelty)
        self.segment_rank = None if segment_rank is None else int(segment_rank)
        self.recycle, self.recycle_frac = recycle, float(recycle_frac)
        self.refresh_every = max(1, int(refresh_every))
        self.eviction = eviction
        self.question_mode, self.alpha = question_mode, float(alpha)
        self.final_refine = bool(final_refine)
        self.coverage = float(coverage)
        self.fill = fill
        self.basis_share = float(basis_share) if fill == "local" else 1.0
        self.device = None if device is None else torch.device(device)
        self.tokens_seen = 0
        self.d: int | None = None
        self._segments: list[_Segment] = []
        self._current: _Segment | None = None
        self._cap = 0
        self._count = 0  # kept tokens (host)
        self._next_sid = 0
        self._t0 = self._t1 = None  # earliest / latest time seen (host floats)
        self._bin = 0.0  # coverage bin width b (seconds), only grows
        self._fbin = 0.0  # fill bin width (seconds, fill="local"), only grows
        self._ranked: set[int] = set()  # fill bins whose fill tokens' masses come from one joint selection
        self._payload_shape = None

    # ---- buffers -------------------------------------------------------------------------------------
    def _alloc(self, d: int, device, payload: Tensor | None):
        self.d, self.device = d, torch.device(device)
        self._rank_cap = self.segment_rank or (d if self.budget <= d // 2 else max(1, d // 2))
        self._cap = 0
        self._arena: _Arena | None = None
        self._block = 0  # largest block pushed
        z = dict(device=self.device)
        self._raw = torch.zeros(0, d, **z)  # (cap, d) tokens as pushed, float32
        self._sw = torch.zeros(0, **z)  # (cap,) sqrt(weight)
        self._out = torch.zeros(0, d, **z) if self.recycle else None  # merged tokens
        self._mass = torch.zeros(0, dtype=torch.float64, **z)
        self._use = torch.zeros(0, dtype=torch.float64, **z)  # 1 + sum of squared coefficients (usage)
        self._times = torch.zeros(0, dtype=torch.float64, **z)
        self._ids = torch.zeros(0, dtype=torch.long, **z)
        self._alive = torch.zeros(0, dtype=torch.bool, **z)
        self._score = torch.zeros(0, dtype=torch.float64, **z)  # eviction loss of basis tokens; inf = free
        self._seg = torch.zeros(0, dtype=torch.long, **z)  # segment id of a basis token, -1 = fill / free
        self._pos = torch.zeros(0, dtype=torch.long, **z)  # row of a basis token in its segment
        self._payload = None
        on = self.question_gram if self.question_gram != "auto" else gram_auto(self.budget, d,
                                                                                 recycle=bool(self.recycle))
        self._gram = torch.zeros(0, 0, **z) if on else None  # (cap, cap) float32 X X^T over the slots
        self._gram_dirty = torch.zeros(0, dtype=torch.bool, **z) if on else None  # (cap,) stored since refresh
        if payload is not None:
            self._payload_shape = tuple(payload.shape[1:])
            self._payload = torch.zeros(0, *self._payload_shape, dtype=payload.dtype, **z)

    def _grow(self, need: int):
        """Room for `need` token slots: geometric growth (from 64 rows) capped at budget + 64 unless more is
        needed (`_reserve`: K + min(block, K) once the memory can fill); never shrinks. An
        allocation the machine refuses is a ValueError and leaves the state as it was."""
        if need <= self._cap:
            return
        new = max(need, min(max(2 * self._cap, 64), self.budget + 64))
        extra = new - self._cap

        def pad(t, fill):
            return torch.cat([t, torch.full((extra, *t.shape[1:]), fill, dtype=t.dtype, device=t.device)])

        try:
            grown = {"_raw": pad(self._raw, 0), "_sw": pad(self._sw, 0), "_mass": pad(self._mass, 0),
                     "_use": pad(self._use, 0), "_times": pad(self._times, 0), "_ids": pad(self._ids, -1),
                     "_alive": pad(self._alive, False), "_score": pad(self._score, math.inf),
                     "_seg": pad(self._seg, -1), "_pos": pad(self._pos, 0)}
            if self._out is not None:
                grown["_out"] = pad(self._out, 0)
            if self._payload is not None:
                grown["_payload"] = pad(self._payload, 0)
            if self._gram is not None:
                gram = self._gram.new_zeros(new, new)  # stale rows / columns of free slots are never read
                gram[: self._cap, : self._cap] = self._gram
                grown["_gram"] = gram
                grown["_gram_dirty"] = pad(self._gram_dirty, False)
        except RuntimeError as e:  # torch.OutOfMemoryError is one too
            raise ValueError(f"out of memory growing the token memory to {new} slots of dimension {self.d} on "
                             f"{self.device} ({str(e).strip().splitlines()[0][:120] if str(e).strip() else 'refused'}); "
                             f"use a smaller budget") from None
        for k, v in grown.items():
            setattr(self, k, v)
        self._cap = new

    def _store(self, js: Tensor, X, t, ids, sw, payload, *, basis: bool) -> Tensor:
        """Put block rows js (p,) into free slots; returns the slots (p,)."""
        p = js.numel()
        if self._cap - self._count < p:
            self._grow(self._count + p)
        slots = (~self._alive).nonzero().reshape(-1)[:p]  # (p,)
        self._raw[slots], self._sw[slots] = X[js], sw[js]
        self._times[slots], self._ids[slots], self._alive[slots] = t[js], ids[js], True
        self._mass[slots] = 1.0
        self._use[slots] = 1.0
        if not basis:
            self._seg[slots] = -1
            self._score[slots] = -1.0
        if self._out is not None:
            self._out[slots] = X[js]
        if self._payload is not None:
            self._payload[slots] = payload[js.to(payload.device)].to(self._payload.device, self._payload.dtype)
        if self._gram is not None:
            self._gram_dirty[slots] = True  # their rows / columns of X X^T: at the next _gram_refresh
        self._count += p
        return slots

    # ---- segment algebra -----------------------------------------------------------------------------
    def _reserve(self, n: int):
        """Room, for good, for a full memory and blocks of n tokens: K + min(n, K) token slots and the arena
        (`arena_rows`). Done by the push that can fill the memory (before it changes anything) and again
        only when a larger block comes, so the memory the selector holds is flat from memory-full on; before
        that the buffers grow with the memory, geometrically (a huge budget allocates nothing up front). An
        allocation the machine refuses is a ValueError and leaves the state as it was."""
        self._grow(self.budget + min(n, self.budget))
        self._grow_arena(arena_rows(self.budget, n))

    def _grow_arena(self, rows: int):
        if self._arena is not None and rows <= self._arena.rows:
            return
        try:
            arena = _Arena(rows, self.d, self._rank_cap, self.device)
        except RuntimeError:  # torch.OutOfMemoryError is one too
            raise ValueError(f"out of memory allocating the segment bases ({rows} rows of dimension {self.d}) "
                             f"on {self.device}; use a smaller budget") from None
        self._pack(arena)

    def _pack(self, arena: _Arena | None = None):
        """Lay the segments out in order from row 0 of `arena` (default: the current one): closed segments
        tight (cap = r), the current segment last with the rest (up to the rank cap). Rows and Gram blocks only
        move down, so packing in order never overwrites a segment not yet moved."""
        arena = arena or self._arena
        off = goff = 0
        for seg in self._segments:
            cap = max(seg.r, min(self._rank_cap, arena.rows - off)) if seg is self._current else seg.r
            if arena is not self._arena or (seg.off, seg.goff, seg.cap) != (off, goff, cap):
                seg.place(arena, off, goff, cap)
            off, goff = off + cap, goff + cap * cap
        self._arena = arena

    def _new_segment(self) -> _Segment:
        self._current = None  # closes the current segment: packing gives it cap = r
        if self._arena is None:
            self._grow_arena(min(arena_rows(self.budget, self._block), 64))
        self._pack()
        used = sum(s.r for s in self._segments)
        goff = sum(s.r * s.r for s in self._segments)
        seg = _Segment(self._next_sid, self._arena, used, goff, min(self._rank_cap, self._arena.rows - used))
        self._next_sid += 1
        self._segments.append(seg)
        self._current = seg
        return seg

    def _room(self, seg: _Segment, need: int):
        """seg (the current segment) can hold `need` rows: pack the arena, or (a larger block than the arena
        was sized for) allocate a larger one."""
        if need <= seg.cap:
            return
        self._pack()
        if need > seg.cap:  # geometric growth while the memory fills (or a block larger than planned for)
            used = sum(s.r for s in self._segments) - seg.r + need
            self._grow_arena(max(used, min(arena_rows(self.budget, self._block), 2 * self._arena.rows)))

    def _set_scores(self, seg: _Segment):
        if seg.r:
            idx = seg.idx
            loss = 1.0 / torch.diagonal(seg.Ginv).clamp_min(1e-300)
            self._score[idx] = loss * self._use[idx] if self.eviction == "usage" else loss

    def _add_block(self, seg: _Segment, slots: Tensor, Ap: Tensor, Qn: Tensor, Rf: Tensor):
        """Append p kept tokens (weighted features Ap (p, d)) to seg at once. Qn (d, p), Rf (p, p): QR of their
        residuals against seg.Q (Rp^T = Qn Rf), so Rp Rp^T = Rf^T Rf is the Schur complement of G."""
        p, r = Ap.shape[0], seg.r
        self._room(seg, r + p)
        G = seg._G
        Zinv = torch.cholesky_inverse(Rf.double(), upper=True)  # (p, p) (Rp Rp^T)^-1
        if r:
            Q = seg.Q
            Qn = Qn - Q @ (Q.T @ Qn)  # re-orthogonalisation pass against the segment basis
            Qn = torch.linalg.qr(Qn).Q  # (d, p)
            E = seg.Ginv @ (seg.S @ Ap.T).double()  # (r, p) least-squares coefficients of Ap on S
            EZ = E @ Zinv  # (r, p)
            G[:r, :r] += EZ @ E.T
            G[:r, r: r + p] = -EZ
            G[r: r + p, :r] = -EZ.T
        G[r: r + p, r: r + p] = Zinv
        seg._Q[r: r + p] = Qn.T
        seg._S[r: r + p] = Ap
        seg._idx[r: r + p] = slots
        seg.r = r + p
        self._seg[slots] = seg.sid
        self._pos[slots] = torch.arange(r, r + p, device=slots.device)
        self._set_scores(seg)

    def _downdate(self, seg: _Segment, pos: Tensor):
        """Remove the kept tokens at rows pos (m,) of seg at once: one block Householder reflection of Q
        (its first m columns span the directions only those tokens cover) and one block downdate of G^-1."""
        r, m = seg.r, pos.numel()
        if m >= r:
            seg.r = 0
            self._segments.remove(seg)
            if self._current is seg:
                self._current = None
            return
        keep = torch.ones(r, dtype=torch.bool, device=pos.device)
        keep[pos] = False
        kpos = torch.argsort((~keep).to(torch.uint8), stable=True)[: r - m]  # kept rows, in order; no sync
        G = seg.Ginv
        Gm = G[:, pos]  # (r, m)
        V = seg.S.T @ Gm.float()  # (d, m): orthogonal to every kept row of S
        a, tau = torch.geqrf(seg.Q.T @ V)  # (r, m): H^T C = [R; 0]
        Qrest = torch.ormqr(a, tau, seg.Q, left=False)[:, m:]  # (Q H)[:, m:]: basis of the kept rows' span
        Gkm = Gm.index_select(0, kpos)  # (r - m, m)
        Gkk = G.index_select(0, kpos).index_select(1, kpos)  # (r - m, r - m)
        Gnew = Gkk.sub_(Gkm @ torch.linalg.solve(Gm.index_select(0, pos), Gkm.T))
        S, idx = seg.S.index_select(0, kpos), seg.idx[kpos]
        n = r - m
        seg._Q[:n] = Qrest.T
        seg._G[:n, :n] = Gnew
        seg._S[:n] = S
        seg._idx[:n] = idx
        seg.r = n
        self._pos[idx] = torch.arange(n, device=idx.device)
        self._set_scores(seg)

    # ---- temporal coverage ---------------------------------------------------------------------------
    def _bins(self, times: Tensor) -> Tensor:
        return ((times - self._t0) / self._bin).floor_().clamp_(min=0).long()

    def _n_bins(self) -> int:
        return int((self._t1 - self._t0) // self._bin) + 2

    def _update_bin(self):
        span = self._t1 - self._t0
        if self.coverage:
            nmax = max(1, int(self.coverage * self.budget))
            b = 2.0 ** (math.floor(math.log2(span / nmax)) + 1) if span > 0 else 2.0 ** -30
            self._bin = max(self._bin, b)
        if self.fill == "local":
            kf = self.budget - self._basis_cap()  # fill places of a full memory
            nmax = max(1, min(kf, max(FILL_BINS, kf // FILL_PER_BIN)))
            b = 2.0 ** (math.floor(math.log2(span / nmax)) + 1) if span > 0 else 2.0 ** -30
            if b > self._fbin:  # wider bins: each now holds fill tokens ranked apart
                self._fbin, self._ranked = b, set()

    def _basis_cap(self) -> int:
        """Basis tokens a full memory holds at most (fill="local"): floor(basis_share x K), at least 1."""
        return max(1, int(self.basis_share * self.budget))

    def _fbins(self, times: Tensor) -> Tensor:
        return ((times - self._t0) / self._fbin).floor_().clamp_(min=0).long()

    def _priority(self) -> tuple[Tensor, Tensor | None]:
        """(effective eviction score (cap,), protected mask or None): fill tokens score -(their bin's
        count of kept tokens) (fill="spread") or -1 / (1 + mass) (fill="local"); per occupied coverage bin one
        kept token is protected: the one with the largest score."""
        alive = self._alive
        fill = alive & (self._seg < 0)
        score = self._score.clone()
        if not self.coverage:
            return score, None
        bins = self._bins(self._times).clamp_(max=self._n_bins() - 1)  # (cap,)
        nb = self._n_bins()
        occ = torch.zeros(nb, dtype=torch.float64, device=alive.device).index_add_(0, bins, alive.double())
        if self.fill == "local":  # fill tokens: below every basis token, the more representative the higher
            score = torch.where(fill, -1.0 / (1.0 + self._use), score)
        else:
            score = torch.where(fill, -occ[bins], score)
        pri = torch.where(alive, score, -math.inf)
        best = torch.full((nb,), -math.inf, dtype=torch.float64, device=alive.device).scatter_reduce(
            0, bins, pri, "amax")
        slot = torch.arange(self._cap, device=alive.device)
        key = torch.where(alive & (pri == best[bins]), slot, -1)
        pick = torch.full((nb,), -1, dtype=torch.long, device=alive.device).scatter_reduce(0, bins, key, "amax")
        prot = torch.zeros(self._cap + 1, dtype=torch.bool, device=alive.device)
        prot[torch.where(pick >= 0, pick, self._cap)] = True
        return score, prot[: self._cap]

    # ---- protocol ------------------------------------------------------------------------------------
    def push(self, tokens, time, *, weights=None, payload=None) -> None:
        """Add one block: tokens (n, d), time float or (n,), weights (n,) >= 0, payload (n, ...)."""
        has_payload = None if self.d is None else self._payload is not None
        X, t, w, payload = check_block(tokens, time, weights, payload, d=self.d, device=self.device,
                                       payload_shape=self._payload_shape, has_payload=has_payload)
        (n, d), device = X.shape, X.device
        if n == 0:
            return
        first = self.d is None
        if first:
            self._alloc(d, device, payload)
        if self._count + n >= self.budget:  # this push may fill the memory
            try:
                self._reserve(n)
            except ValueError:
                if first:
                    self.d = None
                raise
        self._block = max(self._block, n)
        ids = torch.arange(self.tokens_seen, self.tokens_seen + n, device=device)
        self.tokens_seen += n
        self._changed()
        sw = w.sqrt() if w is not None else torch.ones(n, device=device)
        A = X * sw[:, None]  # (n, d) weighted features
        energy = A.pow(2).sum(dim=1)  # (n,)
        emax_t = energy.max()
        ok = (energy > 0) & (energy > ZERO_TOL * emax_t)
        emax, n_ok, e_sum, tmin, tmax = torch.stack([  # the block's statistics: one sync
            emax_t.double(), ok.sum().double(), torch.where(ok, energy, 0.0).sum().double(), t.min(), t.max()
        ]).tolist()
        self._one_time = tmin == tmax
        self._t0 = tmin if self._t0 is None else min(self._t0, tmin)
        self._t1 = tmax if self._t1 is None else max(self._t1, tmax)
        self._update_bin()
        if n_ok:
            cand = ok.nonzero().reshape(-1)  # (m,)
            rest = self._select_block(X, A, cand, t, ids, sw, payload, self.novelty * e_sum / n_ok,
                                      ZERO_TOL * emax)
            self._fill(X, A, energy, rest, t, ids, sw, payload)
        self._evict()
        if self._gram is not None and self.gram_refresh == "push":
            self._gram_refresh()

    def _gram_refresh(self):
        """Rows and columns of X X^T for the slots stored since the last refresh that are still alive (tokens
        stored and evicted in between cost nothing): one (p, d) x (d, cap) matmul, one host sync."""
        rows = (self._gram_dirty & self._alive).nonzero().reshape(-1)
        gram_update(self._gram, self._raw, rows)
        self._gram_dirty.zero_()

    def _gate(self, block_thresh: float) -> float:
        """The energy a token needs to enter a basis: block novelty, and once the memory is full the smallest
        eviction loss (fill tokens count as below zero: a full memory with fill tokens takes any novelty)."""
        if self._count < self.budget:
            return block_thresh
        score, prot = self._priority()
        if self.fill == "local":  # basis tokens compete with fill tokens only below the basis cap
            fill = self._alive & (self._seg < 0)
            if prot is not None:
                fill = fill & ~prot
            basis = self._alive & (self._seg >= 0)
            bs = self._score.masked_fill(~basis, math.inf)
            low, low_all, has_fill = torch.stack([
                bs.masked_fill(prot, math.inf).min() if prot is not None else bs.min(), bs.min(),
                fill.any().double()]).tolist()
            if has_fill and self.n_basis < self._basis_cap():
                return block_thresh
            if not math.isfinite(low_all):
                return block_thresh
            return max(block_thresh, low if math.isfinite(low) else low_all)
        kept = score.masked_fill(~self._alive, math.inf)
        low, low_all = torch.stack([kept.masked_fill(prot, math.inf).min() if prot is not None else kept.min(),
                                    kept.min()]).tolist()
        return max(block_thresh, low if math.isfinite(low) else low_all)  # all protected: the bin's own

    def _select_block(self, X, A, cand, t, ids, sw, payload, block_thresh: float, zero: float) -> Tensor:
        """Basis picks of the block (greedy on the residual, at once per segment). Returns the candidate rows
        left over (m',)."""
        gate = self._gate(block_thresh)
        stop = max(gate, zero)
        left = self.budget  # at most K picks per block
        rest = cand
        first = True
        while rest.numel() and left > 0:
            seg = self._current
            if seg is not None and seg.r >= self._rank_cap:
                seg = None
            Ac = A[rest]  # (m, d)
            R = None
            if seg is not None and seg.r:
                if first and self.eviction == "usage":
                    coef = (Ac @ seg.S.T).double() @ seg.Ginv  # (m, r) least-squares coefficients on S
                    self._use[seg.idx] += coef.pow(2).sum(dim=0)
                    self._set_scores(seg)
                R = torch.addmm(Ac, Ac @ seg.Q, seg.Q.T, alpha=-1.0)  # (m, d) the one projection
                if first and self.segment_novelty is not None and \
                        float(R.pow(2).sum()) > self.segment_novelty * float(Ac.pow(2).sum()):
                    seg, R = None, None
            if seg is None:
                seg = self._new_segment()
            if R is None:
                R = Ac
            first = False
            res = R.pow(2).sum(dim=1)  # (m,)
            room = min(self._rank_cap - seg.r, left)
            k = min(room, int((res > stop).sum()))
            if k == 0:
                break
            order = select_subspace(R, k)  # (k,) greedy order on the residuals
            Qn, Rf = torch.linalg.qr(R[order].T)  # (d, k), (k, k): block Gram-Schmidt of the picks
            pe = torch.diagonal(Rf).square()  # residual energy of each pick when taken
            p = int(torch.cat([pe <= stop, pe.new_ones(1, dtype=torch.bool)]).to(torch.uint8).argmax())
            if p:
                js = rest[order[:p]]
                slots = self._store(js, X, t, ids, sw, payload, basis=True)
                self._add_block(seg, slots, A[js], Qn[:, :p], Rf[:p, :p])
                left -= p
                keep = torch.ones(rest.numel(), dtype=torch.bool, device=rest.device)
                keep[order[:p]] = False
                rest = rest[keep]
            if p < k or seg.r < self._rank_cap:
                break
        return rest

    def _fill(self, X, A, energy, rest, t, ids, sw, payload):
        """Keep more of the block while the memory is not full (a new greedy round on the block's leftover
        rows), and one token per coverage bin of the block that has no kept token."""
        if self.fill == "local":
            left, kept = self._local_fill(X, A, rest, t, ids, sw, payload)
            if not (self._one_time and kept):  # a block of one time that kept a row covers its bin
                self._cover(X, energy, rest if left is None else rest[left], t, ids, sw, payload)
            return
        need = self.budget - self._count
        if need > 0 and rest.numel():
            m = rest.numel()
            js = rest if m <= need else rest[select_subspace(A[rest], need)]
            self._store(js, X, t, ids, sw, payload, basis=False)
            if m <= need:
                return
            keep = torch.ones(X.shape[0], dtype=torch.bool, device=rest.device)
            keep[js] = False
            rest = rest[keep[rest]]
        rest, rb = self._cover(X, energy, rest, t, ids, sw, payload)
        if rb is not None and rest.numel():
            self._spread(X, A, rest, rb, t, ids, sw, payload)

    def _local_fill(self, X, A, rest, t, ids, sw, payload) -> tuple[Tensor | None, int]:
        """fill="local": the block's leftover rows compete with the replaceable kept fill tokens of the same
        fill bins (not protected by coverage) for the free room, the basis tokens above the cap and the bins'
        fill places (`water_fill` of K_f = K - min(basis tokens, basis cap) over the spanned fill bins, loaded
        with BASIS_DENSITY per basis token; rounded up): weighted representative selection (`representative` on
        unit rows, kept tokens weighted by their mass; projected out: the bins' other kept tokens and every
        kept token of the two adjacent fill bins; once the memory is full, rows within |cos| > DUPLICATE_COS of
        a kept basis token may not be picked); the losers among the kept are dropped, the winners among the
        rows are kept as fill with their gain as mass. Returns the rows not kept as a mask over rest (m,)
        (None: all of them) and how many were kept."""
        if not rest.numel():
            return None, 0
        alive = self._alive
        fill = alive & (self._seg < 0)
        _, prot = self._priority()
        fb = self._fbins(t[rest])  # (m,)
        nbf = int((self._t1 - self._t0) // self._fbin) + 2
        fb = fb.clamp_(max=nbf - 1)
        kb = self._fbins(self._times).clamp_(max=nbf - 1)  # (cap,)
        inblk = torch.zeros(nbf, dtype=torch.bool, device=alive.device)
        inblk[fb] = True
        here = alive & inblk[kb]
        swap = here & fill if prot is None else here & fill & ~prot  # replaceable kept fill of the bins
        fixed = here & ~swap  # basis and protected tokens of the bins: they already explain
        lo_t, hi_t = fb.min(), fb.max()  # (no sync yet)
        beside = alive & ~inblk[kb] & (kb >= lo_t - 1) & (kb <= hi_t + 1)  # kept tokens of the adjacent bins
        m = rest.numel()
        Xr = torch.nn.functional.normalize(X[rest], dim=1)  # (m, d)
        spanned = int((self._t1 - self._t0) // self._fbin) + 1
        load = torch.zeros(nbf, dtype=torch.float64, device=alive.device).index_add_(
            0, kb, (alive & (self._seg >= 0)).double())[:spanned] * BASIS_DENSITY  # (spanned,) basis per fill bin
        places = water_fill(load, self.budget - min(self.n_basis, self._basis_cap()))  # (spanned,) fill places
        nblk, n_fill_here, p, lo, hi, share = torch.stack([v.double() for v in (  # one sync
            inblk.sum(), (here & fill).sum(), swap.sum(), lo_t, hi_t, (places * inblk[:spanned]).sum())]).tolist()
        nblk, n_fill_here, p, lo, hi = int(nblk), int(n_fill_here), int(p), int(lo), int(hi)
        share = math.ceil(share - 1e-9)  # the block's bins' fill places
        if nblk == hi - lo + 1:  # the bins lo..hi: their replaceable fill tokens are ranked jointly below
            self._ranked.update(range(lo, hi + 1))
        both = torch.cat([swap, fixed | beside]).nonzero().reshape(-1)  # one sync: replaceable, then the rest
        pk, pre = both[:p], both[p:] - swap.numel()  # (p,), (f,)
        dup = torch.zeros(m, dtype=torch.bool, device=alive.device)
        if self._count >= self.budget:
            # full: a row that nearly duplicates a kept basis token brings no direction the memory lacks (each
            # segment's weighted tokens S read in place; |cos| does not depend on a token's weight)
            for seg in self._segments:
                if seg.r:
                    S = seg.S  # (r, d)
                    dup |= ((Xr @ S.T).abs() / S.norm(dim=1).clamp_min(1e-30)).amax(dim=1) > DUPLICATE_COS
        room = max(0, self.budget - self._count) + max(0, share - n_fill_here) + \
            max(0, self.n_basis - self._basis_cap())  # basis tokens above the cap give way to fill
        add = min(m, room)  # at most: picks of duplicate rows come back as no picks
        if add == 0 and pk.numel() == 0:
            return None, 0
        Xn = torch.cat([torch.nn.functional.normalize(self._raw[pk], dim=1), Xr])  # (p + m, d) unit rows
        w = torch.cat([self._use[pk], torch.ones(m, dtype=torch.float64, device=alive.device)])
        ok = torch.cat([torch.ones(p, dtype=torch.bool, device=alive.device), ~dup])  # (p + m,) pickable
        k = p + add
        if k * (p + m) ** 2 <= CSSP_FLOPS:
            order, gain = representative(Xn, w, k, self._raw[pre] if pre.numel() else None, pickable=ok)
        else:  # a very large pool: greedy order, unit mass
            order = select_subspace(Xn * ok[:, None], k)
            gain = torch.where(ok[order], 1.0, -math.inf).double()
        order = torch.where(gain > -math.inf, order, p + m)  # no pick -> a spare last entry
        chosen = torch.zeros(p + m + 1, dtype=torch.bool, device=alive.device)
        chosen[order] = True
        mass = torch.zeros(p + m + 1, dtype=torch.float64, device=alive.device)
        mass[order] = gain.clamp_min(0.0)
        srt = torch.sort(order).values  # the kept tokens' picks first, then the rows', then the no picks
        n_old, n_add = torch.stack([(order < p).sum(), ((order >= p) & (order < p + m)).sum()]).tolist()  # 1 sync
        new = srt[n_old: n_old + n_add]  # (add',) the rows' picks, as indices of the pool
        if p:  # the kept fill tokens that lost their place leave (fill: no segment to downdate)
            ch = chosen[:p]
            self._use[pk] = torch.where(ch, mass[:p], self._use[pk])
            self._alive[pk] = ch
            self._score[pk] = torch.where(ch, self._score[pk], math.inf)
            self._count -= p - n_old
        js = rest[new - p]  # (add',) rows that won a place
        if js.numel():
            slots = self._store(js, X, t, ids, sw, payload, basis=False)
            self._use[slots] = mass[new]
        left = torch.ones(m, dtype=torch.bool, device=alive.device)
        left[new - p] = False
        return left, int(js.numel())

    def _evict_fill(self, m: int) -> tuple[Tensor, Tensor]:
        """fill="local": evict up to m fill tokens at once (coverage-protected ones excepted), levelled in time
        (`levelled_takes`: each eviction from the fill bin with the largest load, its kept fill tokens plus
        BASIS_DENSITY per basis token, ties to the earlier bin), the least massive of the bin first. A bin whose
        tokens' masses come from separate selections (the bins widened since it was last ranked) is first re-ranked
        jointly (`representative` on its candidates, weights = their mass, the bin's other kept tokens projected
        out; the gains become the masses): by their old masses alone, the most massive tokens of a merged bin would
        be every earlier bin's first picks, all along the same dominant directions. Returns (slots, their
        priorities)."""
        _, prot = self._priority()
        alive = self._alive
        cand = alive & (self._seg < 0)
        if prot is not None:
            cand = cand & ~prot
        nbf = int((self._t1 - self._t0) // self._fbin) + 2
        b = self._fbins(self._times).clamp_(max=nbf - 1)  # (cap,)
        # the alive slots by (fill bin, candidates before the bin's other kept tokens); dead slots sort last
        key = torch.where(alive, 2 * b + (~cand).long(), 2 * nbf)
        srt = torch.sort(key, stable=True).indices[: self._count]  # (count,)
        nct = torch.bincount(b, weights=cand.double(), minlength=nbf).long()  # (nbf,) candidates per bin
        load = torch.zeros(nbf, dtype=torch.float64, device=b.device).index_add_(
            0, b, torch.where(self._seg >= 0, BASIS_DENSITY, 1.0) * alive.double())  # (nbf,) fill + 0.35 x basis
        nc, nf, takes = torch.stack([nct, torch.bincount(b, weights=(alive & ~cand).double(), minlength=nbf).long(),
                                     levelled_takes(load, torch.where(cand, b, nbf), m)]).tolist()
        out = []
        off = 0
        for j, e in enumerate(takes):
            c, f = nc[j], nf[j]
            if e:
                cs = srt[off: off + c]  # (c,) the bin's candidates
                if j not in self._ranked and c ** 3 <= CSSP_FLOPS:
                    fs = srt[off + c: off + c + f]
                    order, gain = representative(torch.nn.functional.normalize(self._raw[cs], dim=1),
                                                 self._use[cs], c, self._raw[fs] if f else None)
                    self._use[cs[order]] = gain
                    self._ranked.add(j)
                out.append(cs[torch.sort(self._use[cs], stable=True).indices[:e]])  # the least massive
            off += c + f
        if not out:
            return srt[:0], torch.zeros(0, dtype=torch.float64, device=srt.device)
        out = torch.cat(out)
        return out, -1.0 / (1.0 + self._use[out])

    def _cover(self, X, energy, rest, t, ids, sw, payload) -> tuple[Tensor, Tensor | None]:
        """One token (the largest) per coverage bin of the block that has no kept token. Returns the rows
        left (m',) and their coverage bins (m',) (None when coverage is off or nothing is left)."""
        if not self.coverage or not rest.numel():
            return rest, None
        nb = self._n_bins()
        alive = self._alive
        bins = self._bins(self._times).clamp_(max=nb - 1)
        occ = torch.zeros(nb, dtype=torch.long, device=alive.device).index_add_(0, bins, alive.long())
        rb = self._bins(t[rest]).clamp_(max=nb - 1)  # (m,)
        e = torch.where(occ[rb] == 0, energy[rest].double(), -1.0)  # rows of empty bins
        best = torch.full((nb,), -1.0, dtype=torch.float64, device=alive.device).scatter_reduce(0, rb, e, "amax")
        row = torch.arange(rest.numel(), device=rest.device)
        key = torch.where((e >= 0) & (e == best[rb]), row, rest.numel())
        first = torch.full((nb,), rest.numel(), dtype=torch.long, device=alive.device).scatter_reduce(
            0, rb, key, "amin")
        first = first[first < rest.numel()]  # one sync
        if first.numel() and self._count >= self.budget and not bool((alive & (self._seg < 0)).any()):
            # a memory of basis tokens only: a coverage pick would evict a basis direction; skip the picks
            # that nearly duplicate a kept token (their stretch is represented by that token's content)
            kept = torch.nn.functional.normalize(self._raw[alive.nonzero().reshape(-1)], dim=1)  # (k, d)
            cos = (torch.nn.functional.normalize(X[rest[first]], dim=1) @ kept.T).abs().amax(dim=1)
            first = first[cos <= DUPLICATE_COS]
        if first.numel():
            self._store(rest[first], X, t, ids, sw, payload, basis=False)
            keep = torch.ones(rest.numel(), dtype=torch.bool, device=rest.device)
            keep[first] = False
            rest, rb = rest[keep], rb[keep]
        return rest, rb

    def _spread(self, X, A, rest, rb, t, ids, sw, payload):
        """Spread the fill over time: while some bin holds more than its share K // (occupied bins) and still
        has fill tokens to give, the block's bin takes fill tokens up to its share (greedy order on the block's
        leftover rows); eviction then takes fill tokens from the most crowded bins."""
        nb = self._n_bins()
        alive = self._alive
        bins = self._bins(self._times).clamp_(max=nb - 1)
        occ = torch.zeros(nb, dtype=torch.long, device=alive.device).index_add_(0, bins, alive.long())
        fill = alive & (self._seg < 0)
        fill_occ = torch.where(fill, occ[bins], 0).max()
        occupied, here, crowded = torch.stack([(occ > 0).sum(), occ[rb[0]], fill_occ]).tolist()
        share = self.budget // max(1, occupied)
        k = min(share - here, rest.numel())
        if k > 0 and crowded > share:
            self._store(rest[select_subspace(A[rest], k)], X, t, ids, sw, payload, basis=False)

    def _evict(self):
        """Bring the memory back to K. fill="local": first the basis tokens above the basis cap (cheapest
        loss first), then fill tokens (`_evict_fill`), then basis tokens; fill="spread": fill tokens of the
        most crowded coverage bins first, then basis tokens by loss."""
        evicted, losses = [], []
        if self.fill == "local" and self._count > self.budget:
            nprot = self._n_bins() if self.coverage else 0  # protected tokens: at most one per coverage bin
            eb = min(self._count - self.budget, self.n_basis - self._basis_cap(), self.n_basis - nprot)
            if eb > 0:
                self._evict_rounds(eb, evicted, losses, basis_only=True)
            m = self._count - self.budget
            if m > 0:
                out, pri = self._evict_fill(m)
                if out.numel():
                    self._alive[out] = False
                    self._score[out] = math.inf
                    self._count -= int(out.numel())
                    evicted.append(out)
                    losses.append(pri)
        if self._count > self.budget:
            self._evict_rounds(self._count - self.budget, evicted, losses, basis_only=False)
        if not evicted:
            return
        slots = torch.cat(evicted)
        if self.recycle == "nearest":
            self._merge_into_nearest(self._out[slots], self._mass[slots])
        elif self.recycle == "cluster":
            loss = torch.cat(losses)
            top = slots[torch.sort(-loss, stable=True).indices[: max(1, math.ceil(self.recycle_frac * slots.numel()))]]
            merged, assign = density_peak_merge(self._out[top], max(1, math.ceil(top.numel() / 2)))
            mass = torch.zeros(merged.shape[0], dtype=torch.float64, device=self.device).index_add_(
                0, assign, self._mass[top])
            merged = torch.zeros_like(merged).index_add_(0, assign, self._out[top] * self._mass[top, None].float())
            self._merge_into_nearest(merged / mass[:, None].float(), mass)

    def _evict_rounds(self, m: int, evicted: list, losses: list, *, basis_only: bool):
        """Evict m tokens, cheapest effective score first, in rounds (coupled candidates wait), one downdate
        per segment and round. basis_only: fill tokens are not candidates."""
        rounds = 0
        while m > 0:
            rounds += 1
            score, prot = self._priority()
            free = ~self._alive if prot is None else (~self._alive | prot)
            if basis_only:
                free = free | (self._seg < 0)
            score = score.masked_fill(free, math.inf)
            order = torch.sort(score, stable=True).indices[:m]  # (m,) cheapest first (basis_only: m is at
            # most the unprotected basis tokens, so every candidate is one)
            segs = self._seg[order]
            if rounds < EVICT_ROUNDS:
                order = order[~self._coupled(order, segs)]
                segs = self._seg[order]
            sids = segs.tolist()
            if basis_only and not sids:
                break
            for sid in sorted(set(sids) - {-1}):
                seg = next(s for s in self._segments if s.sid == sid)
                self._downdate(seg, self._pos[order[segs == sid]])
            losses.append(score[order])
            self._alive[order] = False
            self._score[order] = math.inf
            self._seg[order] = -1
            self._count -= len(sids)
            m -= len(sids)
            evicted.append(order)

    def _coupled(self, order: Tensor, segs: Tensor) -> Tensor:
        """(m,) bool: candidate i shares a segment with a cheaper candidate j and |G^-1_ij| /
        sqrt(G^-1_ii G^-1_jj) > COUPLING (evicting both could lose a direction neither loses alone)."""
        out = torch.zeros(order.numel(), dtype=torch.bool, device=order.device)
        if order.numel() < 2:
            return out
        uniq, counts = torch.unique(segs, return_counts=True)
        for sid, c in zip(uniq.tolist(), counts.tolist()):
            if sid < 0 or c < 2:
                continue
            seg = next(s for s in self._segments if s.sid == sid)
            sel = (segs == sid).nonzero().reshape(-1)  # ascending = cheapest first
            p = self._pos[order[sel]]
            G = seg.Ginv[p][:, p]  # (c, c)
            dg = torch.diagonal(G).clamp_min(1e-300).sqrt()
            strong = (G.abs() / (dg[:, None] * dg[None, :])) > COUPLING
            out[sel] = torch.tril(strong, diagonal=-1).any(dim=1)
        return out

    def _merge_into_nearest(self, toks: Tensor, mass: Tensor):
        alive = self._alive.nonzero().reshape(-1)
        if not alive.numel() or not toks.shape[0]:
            return
        kept = self._out[alive]  # (k, d)
        sim = torch.nn.functional.normalize(toks, dim=1) @ torch.nn.functional.normalize(kept, dim=1).T
        near = alive[sim.argmax(dim=1)]  # (m,)
        u = near.unique()
        madd = torch.zeros(self._cap, dtype=torch.float64, device=self.device).index_add_(0, near, mass)
        sums = torch.zeros(self._cap, self.d, device=self.device).index_add_(0, near, toks * mass[:, None].float())
        mu = self._mass[u]
        self._out[u] = ((self._out[u] * mu[:, None].float() + sums[u]) / (mu + madd[u])[:, None].float())
        self._mass[u] = mu + madd[u]

    def _gather(self) -> Memory:
        if not self._cap:
            d = self.d or 0
            return Memory(torch.zeros(0, d), torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.long),
                          None)
        alive = self._alive.nonzero().reshape(-1)
        alive = alive[torch.argsort(self._ids[alive])]
        toks = (self._out if self._out is not None else self._raw)[alive]
        pay = self._payload[alive] if self._payload is not None else None
        return Memory(toks, self._times[alive], self._ids[alive], pay)  # indexing copies, once per state

    def final(self, k: int, relevance=None) -> Tensor:
        """Indices (ascending) into memory of min(k, len(memory)) tokens for the LLM (question-aware with
        relevance). Runs on the memory snapshot (one copy per state, shared with `memory`); nothing is rerun
        when k >= len(memory), nor for a question-agnostic k already answered since the last push. With the
        Gram on (question_gram), the greedy runs from it (select.gram) instead of from the rows."""
        kw = dict(mode=self.question_mode, alpha=self.alpha, refine=self.final_refine)
        if self._cap and getattr(self, "_gram", None) is not None:
            kw["gram"] = self.gram_view
        return self._final(k, relevance, **kw)

    def gram_view(self) -> tuple[Tensor, Tensor]:
        """(the slot-indexed Gram (cap, cap), the slot of each memory token (m,)), refreshed first: G[index][:,
        index] is the memory's Gram, read without an (m, m) copy (what `final` uses). Read-only."""
        if getattr(self, "_gram", None) is None:
            raise ValueError("this selector keeps no Gram (question_gram is off)")
        self._gram_refresh()  # no-op after a push with gram_refresh="push"
        alive = self._alive.nonzero().reshape(-1)
        return self._gram, alive[torch.argsort(self._ids[alive])]  # the snapshot's order (`_gather`)

    def memory_gram(self) -> Tensor:
        """(len(memory), len(memory)) float32 Gram X X^T of the memory tokens, in memory order (a gather of the
        maintained Gram; ValueError when question_gram is off). `final` reads the Gram without this copy."""
        G, order = self.gram_view()
        return G.index_select(0, order).index_select(1, order)  # (m, m)

    # ---- diagnostics ---------------------------------------------------------------------------------
    def orthonormality_error(self) -> float:
        """max over segments of ||Q^T Q - I||_F (0 for an empty selector)."""
        err = 0.0
        for seg in self._segments:
            if seg.rank:
                eye = torch.eye(seg.rank, device=seg.Q.device)
                err = max(err, float(torch.linalg.matrix_norm(seg.Q.T @ seg.Q - eye)))
        return err

    @property
    def n_segments(self) -> int:
        return len(self._segments)

    @property
    def n_kept(self) -> int:
        """Tokens in memory (= len(memory), without gathering it)."""
        return self._count

    @property
    def n_basis(self) -> int:
        """Kept tokens that hold a basis direction (the rest are fill / coverage tokens)."""
        return sum(seg.r for seg in self._segments)

    def buffer_bytes(self) -> int:
        """Bytes of every tensor the selector holds (slot buffers and the segment arena)."""
        ts = [self._raw, self._sw, self._mass, self._use, self._times, self._ids, self._alive, self._score,
              self._seg, self._pos] if self._cap else []
        ts += [t for t in (getattr(self, "_out", None), getattr(self, "_payload", None),
                           getattr(self, "_gram", None), getattr(self, "_gram_dirty", None)) if t is not None]
        ts += list(self._arena.tensors()) if getattr(self, "_arena", None) is not None else []
        return sum(t.numel() * t.element_size() for t in ts)


def memory_bytes(budget: int, d: int, *, payload_width: int = 0, recycle: bool = False, block: int = 256,
                 question_gram="auto") -> int:
    """Bytes a StreamingSelector of `budget` tokens of dimension `d` (default segment rank cap) holds for
    blocks of at most `block` tokens: allocated at the first push and flat from then on. Per slot (budget +
    min(block, budget) of them) the float32 token (twice with recycling), the payload row and the
    bookkeeping; the arena (`arena_rows` rows): S and Q float32, idx int64, and the float64 Gram inverses in
    min(rank cap, rows) x rows entries; with the Gram (question_gram True, or "auto" where `gram_auto` turns it
    on) a float32 (slots, slots) matrix. The baselines hold less."""
    k, d, pw = check_budget(budget), int(d), max(0, int(payload_width))
    b = max(1, int(block))
    slots = k + min(b, k)
    per_slot = 4 * d * (2 if recycle else 1) + 4 * pw + 8 * 8 + 4 + 1  # + sw, mass, use, times, ids, score, seg, pos, alive
    rows = arena_rows(k, b)
    rank_cap = d if k <= d // 2 else max(1, d // 2)
    arena = rows * (2 * 4 * d + 8) + 8 * min(rank_cap, rows) * rows
    on = gram_auto(k, d, recycle=recycle) if question_gram == "auto" else bool(question_gram)  # as the selector
    return slots * per_slot + arena + ((4 * slots + 1) * slots if on else 0)


def final_select(memory: Memory, k, relevance=None, *, mode: str = "resprune", alpha: float = 0.3,
                 refine: bool = False, gram=None) -> Tensor:
    """Shared `final`: all of memory when k >= len(memory); else greedy subspace selection of the memory
    tokens (question_select with the given relevance (len(memory),) when one is given). refine: improve the
    question-agnostic greedy pick with greedy.refine_swaps (lower reconstruction error of the memory; not
    applied when relevance is given). gram: None, or a callable returning the (m, m) Gram of memory.tokens or
    (G, index) with G[index][:, index] that Gram (called only when a selection runs): the greedy then runs from
    it (select.gram). Ascending indices."""
    k = check_k(k)
    m = len(memory)
    if relevance is not None:
        relevance = torch.as_tensor(relevance, dtype=torch.float32).reshape(-1)
        if relevance.numel() != m:
            raise ValueError(f"relevance has {relevance.numel()} entries for {m} memory tokens")
    dev = memory.tokens.device
    if k >= m:
        return torch.arange(m, device=dev)
    if gram is not None:
        G = gram()
        G, index = G if isinstance(G, tuple) else (G, None)
        if relevance is None:
            idx = gram_greedy(memory.tokens, G, k, index=index)
        else:
            idx = gram_question_select(memory.tokens, G, k, relevance.to(dev), mode=mode, alpha=alpha, index=index)
        if refine and relevance is None:
            idx = refine_swaps(memory.tokens, idx)
    elif relevance is None:
        idx = select_subspace(memory.tokens, k)
        if refine:
            idx = refine_swaps(memory.tokens, idx)
    else:
        from .relevance import question_select

        idx = question_select(memory.tokens, k, relevance.to(dev), mode=mode, alpha=alpha)
    return torch.sort(idx).values
