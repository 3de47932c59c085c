"""FROZEN COPY (bench only, not exported): the first-generation StreamingSelector as of commit 833939b, the
"before" of the select suite's before -> after tables. Do not edit; the library's is streamprune.select.streaming.

Streaming subspace selection with a fixed token budget K (docs/design.md §3.2).

Each block: residuals against the current segment's orthonormal basis; greedy picks inside the block while
the best residual energy exceeds `novelty` x the block's mean token energy; then, while the memory holds
more than K tokens, evict the kept token whose removal loses the least: for the kept tokens S of a segment
(Gram G = S S^T), the part of token j not explained by the other kept tokens of its segment has energy
1 / (G^-1)_jj (= 1 / ||row j of R^-1||^2 for S^T = QR). Segments (the K >= d trap): a new segment starts
when a block's unexplained energy fraction exceeds `segment_novelty` or the current segment's rank reaches
`segment_rank` (default d // 2 when K > d // 2), so the current basis never spans R^d and new content always
leaves a residual. Eviction compares the per-segment losses directly, so the budget goes where content is.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from streamprune.select.greedy import ZERO_TOL, check_budget, greedy_residual
from streamprune.select.recycle import density_peak_merge
# the contract pieces that did not change between the engines (the Memory type, block validation, the question
# stage) are the library's own: only the engine itself is frozen here
from streamprune.select.streaming import Memory, check_block, final_select


class _Segment:
    """Kept tokens of one temporal segment, in preallocated buffers of capacity `cap` (grown by doubling up
    to the rank cap): member slots, weighted features S (r, d), orthonormal basis Q (d, r), G^-1 (r, r)
    float64. Rows/columns stay in insertion order (deletion shifts the tail), so the arithmetic is the same
    as with freshly concatenated tensors."""

    def __init__(self, d: int, device, cap: int = 64):
        self.slots: list[int] = []
        self.r = 0
        self._S = torch.zeros(cap, d, device=device)  # (cap, d)
        self._Q = torch.zeros(d, cap, device=device)  # (d, cap)
        self._G = torch.zeros(cap, cap, dtype=torch.float64, device=device)  # (cap, cap)
        self._idx = torch.zeros(cap, dtype=torch.long, device=device)  # (cap,) member slots
        self.updates = 0

    @property
    def rank(self) -> int:
        return self.r

    @property
    def S(self) -> Tensor:
        return self._S[: self.r]  # (r, d)

    @property
    def Q(self) -> Tensor:
        return self._Q[:, : self.r]  # (d, r)

    @property
    def Ginv(self) -> Tensor:
        return self._G[: self.r, : self.r]  # (r, r)

    @property
    def idx(self) -> Tensor:
        return self._idx[: self.r]  # (r,)

    def reserve(self, need: int, limit: int):
        cap = self._idx.numel()
        if need <= cap:
            return
        new = max(need, min(2 * cap, max(limit, need)))
        r = self.r
        S = self._S.new_zeros(new, self._S.shape[1])
        S[:r] = self._S[:r]
        Q = self._Q.new_zeros(self._Q.shape[0], new)
        Q[:, :r] = self._Q[:, :r]
        G = self._G.new_zeros(new, new)
        G[:r, :r] = self._G[:r, :r]
        idx = self._idx.new_zeros(new)
        idx[:r] = self._idx[:r]
        self._S, self._Q, self._G, self._idx = S, Q, G, idx


class StreamingSelector:
    """Keeps at most `budget` tokens of a stream of blocks (the Selector protocol; see ARCHITECTURE.md).

    budget: K >= 1.
    novelty: in-block greedy stops when the best residual energy <= novelty x the block's mean token energy
      (so a static scene costs nothing); once the memory is full, a token must also lose more than the
      cheapest kept token would (its residual energy > min eviction loss), so churn stays low.
    segment_novelty: None (default) or f: a block whose unexplained energy fraction vs the current segment
      exceeds f starts a new segment.
    segment_rank: rank cap per segment (default d // 2 when K > d // 2, else d: a basis of rank <= K < d/2
      cannot span R^d).
    recycle: None | "nearest" (each evicted token is merged, mass-weighted mean, into its most
      cosine-similar kept token) | "cluster" (the top recycle_frac of a push's evicted tokens by loss are
      density-peak clustered into ceil(m / 2) clusters, each merged into its nearest kept token). Merging
      changes only Memory.tokens, never the selection math, ids, times or payload.
    refresh_every: rebuild a segment's basis and Gram inverse from its tokens after this many updates.
    eviction: "leverage" (default; loss = the kept token's own unexplained energy 1/(G^-1)_jj, favours
      novelty) | "usage" (loss = (sum over the current segment's later blocks of each token's squared
      least-squares coefficient on j, plus 1) / (G^-1)_jj: the stream energy lost along j's unique
      direction, favours reconstruction of everything seen).
    question_mode, alpha: what final(k, relevance) uses (see relevance.question_select).
    final_refine: final(k) without relevance refines its greedy pick with swaps (greedy.refine_swaps).
    Zero rows and zero-weight rows are skipped (never enter the basis or memory; they still get ids).
    Empty blocks are a no-op. Bad input raises ValueError and leaves the state untouched.
    Device: the first pushed tensor's (or `device`); math in float32, Gram inverses in float64.
    """

    def __init__(self, budget: int, *, novelty: float = 0.01, segment_novelty: float | None = None,
                 segment_rank: int | None = None, recycle: str | None = None, recycle_frac: float = 0.3,
                 refresh_every: int = 256, eviction: str = "leverage", question_mode: str = "resprune",
                 alpha: float = 0.3, final_refine: bool = False, device=None):
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
        self.budget = check_budget(budget)
        self.novelty = float(novelty)
        self.segment_novelty = None if segment_novelty is None else float(segment_novelty)
        self.segment_rank = None if segment_rank is None else int(segment_rank)
        self.recycle, self.recycle_frac = recycle, float(recycle_frac)
        self.refresh_every = max(1, int(refresh_every))
        self.eviction = eviction
        self.question_mode, self.alpha = question_mode, float(alpha)
        self.final_refine = bool(final_refine)
        self.device = None if device is None else torch.device(device)
        self.tokens_seen = 0
        self.d: int | None = None
        self._segments: list[_Segment] = []
        self._current: _Segment | None = None
        self._cap = 0
        self._payload_shape = None

    # ---- buffers -------------------------------------------------------------------------------------
    def _alloc(self, d: int, device, payload: Tensor | None):
        self.d, self.device = d, torch.device(device)
        # K <= d/2: one basis can never span R^d, no segments needed; else segments of rank d/2
        self._rank_cap = self.segment_rank or (d if self.budget <= d // 2 else max(1, d // 2))
        self._cap = 0
        self._raw = torch.zeros(0, d, device=self.device)  # (cap, d) tokens as pushed, float32
        self._sw = torch.zeros(0, device=self.device)  # (cap,) sqrt(weight)
        self._out = torch.zeros(0, d, device=self.device) if self.recycle else None  # merged tokens
        self._mass = torch.zeros(0, dtype=torch.float64, device=self.device)
        self._use = torch.zeros(0, dtype=torch.float64, device=self.device)  # sum of squared coefficients
        self._times = torch.zeros(0, dtype=torch.float64, device=self.device)
        self._ids = torch.zeros(0, dtype=torch.long, device=self.device)
        self._alive = torch.zeros(0, dtype=torch.bool, device=self.device)
        self._score = torch.zeros(0, dtype=torch.float64, device=self.device)  # loss if evicted; inf = free
        self._seg_of: list[_Segment | None] = []
        self._payload = None
        self._wsf = torch.zeros(0, device=self.device)  # flat float32 scratch for in-place segment updates
        self._wsd = torch.zeros(0, dtype=torch.float64, device=self.device)  # flat float64 scratch
        if payload is not None:
            self._payload_shape = tuple(payload.shape[1:])
            self._payload = torch.zeros(0, *self._payload_shape, dtype=payload.dtype, device=self.device)

    def _grow(self, need: int):
        """Room for `need` token slots. Buffers grow geometrically as the memory fills (doubling from 64
        rows), capped at budget + 64 (a block's picks before eviction) unless more is needed: a huge
        budget costs nothing until tokens arrive. An allocation the machine refuses is a ValueError."""
        if need <= self._cap:
            return
        new = max(need, min(max(2 * self._cap, 64), self.budget + 64))
        extra = new - self._cap

        def pad(t, fill):
            return torch.cat([t, torch.full((extra, *t.shape[1:]), fill, dtype=t.dtype, device=t.device)])

        try:  # all new buffers first, so a refused allocation leaves the state as it was
            grown = {"_raw": pad(self._raw, 0), "_sw": pad(self._sw, 0), "_mass": pad(self._mass, 0),
                     "_use": pad(self._use, 0), "_times": pad(self._times, 0), "_ids": pad(self._ids, -1),
                     "_alive": pad(self._alive, False), "_score": pad(self._score, math.inf)}
            if self._out is not None:
                grown["_out"] = pad(self._out, 0)
            if self._payload is not None:
                grown["_payload"] = pad(self._payload, 0)
        except RuntimeError as e:  # torch.OutOfMemoryError is one too
            raise ValueError(f"out of memory growing the token memory to {new} slots of dimension {self.d} on "
                             f"{self.device} ({str(e).strip().splitlines()[0][:120] if str(e).strip() else 'refused'}); "
                             f"use a smaller budget") from None
        for k, v in grown.items():
            setattr(self, k, v)
        self._seg_of += [None] * extra
        self._cap = new

    def _free_slots(self, m: int) -> Tensor:
        free = (~self._alive).nonzero().reshape(-1)
        if free.numel() < m:
            self._grow(self._cap + m - free.numel())
            free = (~self._alive).nonzero().reshape(-1)
        return free[:m]

    # ---- segment algebra -----------------------------------------------------------------------------
    def _scratch(self, *shape: int, double: bool = False) -> Tensor:
        """A contiguous (shape) view of a reused scratch buffer (no fresh allocation per update)."""
        n = math.prod(shape)
        buf = self._wsd if double else self._wsf
        if buf.numel() < n:
            buf = torch.empty(max(n, 2 * buf.numel()), dtype=buf.dtype, device=buf.device)
            if double:
                self._wsd = buf
            else:
                self._wsf = buf
        return buf[:n].view(shape)

    def _shift_up(self, dst: Tensor, src: Tensor, double: bool = False):
        """dst.copy_(src) for overlapping views via scratch (torch refuses partially overlapping copies)."""
        tmp = self._scratch(*src.shape, double=double)
        dst.copy_(tmp.copy_(src))

    def _new_segment(self) -> _Segment:
        return _Segment(self.d, self.device, cap=min(self._rank_cap, 2 * self.budget, 64))

    def _set_scores(self, seg: _Segment):
        if seg.rank:
            idx = seg.idx
            loss = 1.0 / torch.diagonal(seg.Ginv).clamp_min(1e-300)
            self._score[idx] = loss * self._use[idx] if self.eviction == "usage" else loss

    def _refresh(self, seg: _Segment):
        """Rebuild Q and G^-1 of a segment from its tokens (numerical hygiene)."""
        seg.updates = 0
        if not seg.rank:
            return
        S = seg.S  # (r, d)
        seg.Q.copy_(torch.linalg.qr(S.T).Q)  # (d, r)
        G = S.double() @ S.double().T  # (r, r)
        L, info = torch.linalg.cholesky_ex(G)
        seg.Ginv.copy_(torch.cholesky_inverse(L) if int(info) == 0 else torch.linalg.pinv(G, hermitian=True))
        self._set_scores(seg)

    def _add(self, seg: _Segment, slot: int, a: Tensor, q: Tensor, s: float):
        """Append kept token (selection features a (d,), new direction q (d,), residual energy s)."""
        r = seg.rank
        seg.reserve(r + 1, self._rank_cap)
        G = seg._G
        if r:
            b = (seg.S @ a).double()  # (r,)
            g = G[:r, :r] @ b  # (r,)
            G[:r, :r] += torch.outer(g, g, out=self._scratch(r, r, double=True)).div_(s)
            col = -g / s
            G[:r, r] = col
            G[r, :r] = col
        G[r, r] = 1.0 / s
        seg._Q[:, r] = q
        seg._S[r] = a
        seg._idx[r] = slot
        seg.r = r + 1
        seg.slots.append(slot)
        self._seg_of[slot] = seg
        seg.updates += 1

    def _remove(self, seg: _Segment, slot: int):
        """Drop a kept token from its segment: Householder downdate of Q, block downdate of G^-1 (in place)."""
        p = seg.slots.index(slot)
        r = seg.rank
        if r > 1:
            S, Q, G = seg.S, seg.Q, seg._G
            v = S.T @ G[:r, p].float()  # (d,) direction only token p covers
            c = Q.T @ v  # (r,)
            c = c / c.norm().clamp_min(1e-30)
            w = c.clone()
            w[-1] += torch.where(c[-1] >= 0, 1.0, -1.0)  # no host sync (GPU)
            # (d, r - 1) Householder reflection, last column dropped
            h = torch.outer(Q @ w, w[:-1], out=self._scratch(Q.shape[0], r - 1))
            h *= 2.0 / (w @ w)  # float32 division: same bits as the float64 one rounded to float32
            seg._Q[:, : r - 1] -= h
            col = torch.cat([G[:p, p], G[p + 1: r, p]])  # (r - 1,)
            piv = G[p, p].clone()
            if p < r - 1:  # delete row/column p, keeping the order of the others
                self._shift_up(G[p: r - 1, :r], G[p + 1: r, :r], double=True)
                self._shift_up(G[: r - 1, p: r - 1], G[: r - 1, p + 1: r], double=True)
                self._shift_up(seg._S[p: r - 1], seg._S[p + 1: r])
                seg._idx[p: r - 1] = seg._idx[p + 1: r].clone()
            G[: r - 1, : r - 1] -= torch.outer(col, col, out=self._scratch(r - 1, r - 1, double=True)).div_(piv)
        seg.r = r - 1
        seg.slots.pop(p)
        seg.updates += 1
        self._seg_of[slot] = None
        if seg.updates >= self.refresh_every:
            self._refresh(seg)
        else:
            self._set_scores(seg)
        if not seg.rank:
            self._segments.remove(seg)
            if self._current is seg:
                self._current = None

    # ---- protocol ------------------------------------------------------------------------------------
    def push(self, tokens, time, *, weights=None, payload=None) -> None:
        """Add one block: tokens (n, d), time float or (n,), weights (n,) >= 0, payload (n, ...)."""
        has_payload = None if self.d is None else self._payload is not None
        X, t, w, payload = check_block(tokens, time, weights, payload, d=self.d, device=self.device,
                                       payload_shape=self._payload_shape, has_payload=has_payload)
        (n, d), device = X.shape, X.device
        if n == 0:
            return
        if self.d is None:
            self._alloc(d, device, payload)
        ids = torch.arange(self.tokens_seen, self.tokens_seen + n, device=device)
        self.tokens_seen += n
        sw = w.sqrt() if w is not None else torch.ones(n, device=device)
        A = X * sw[:, None]  # (n, d) weighted features
        energy = A.pow(2).sum(dim=1)  # (n,)
        emax = float(energy.max())
        cand = ((energy > 0) & (energy > ZERO_TOL * emax)).nonzero().reshape(-1)
        if cand.numel():
            self._select_block(X, A, energy, cand, t, ids, sw, payload, emax)
        self._evict()

    def _select_block(self, X, A, energy, cand, t, ids, sw, payload, emax: float):
        block_thresh = self.novelty * float(energy[cand].mean())
        zero = ZERO_TOL * emax  # emax = energy[cand].max(): the block's largest energy is a candidate
        left = self.budget  # at most K picks per block
        first = True
        while cand.numel() and left > 0:
            # a full memory only takes tokens that lose more than its cheapest kept token would
            full = int(self._alive.sum()) >= self.budget if self._cap else False
            thresh = max(block_thresh, float(self._score.min())) if full else block_thresh
            seg = self._current
            Ac = A[cand]  # (m, d)
            if seg is not None and seg.rank >= self._rank_cap:
                seg = None
            if seg is not None and first and self.eviction == "usage" and seg.rank:
                # energy of this block each kept token carries: least-squares coefficients on S
                coef = (Ac @ seg.S.T).double() @ seg.Ginv  # (m, r)
                self._use[seg.idx] += coef.pow(2).sum(dim=0)
                self._set_scores(seg)
            if seg is not None:
                R = Ac - (Ac @ seg.Q) @ seg.Q.T
                R -= (R @ seg.Q) @ seg.Q.T  # second pass
                if first and self.segment_novelty is not None and \
                        float(R.pow(2).sum()) > self.segment_novelty * float(energy[cand].sum()):
                    seg = None
            if seg is None:
                seg = self._new_segment()
                self._segments.append(seg)
                self._current = seg
                R = Ac.clone()
            first = False
            room = min(self._rank_cap - seg.rank, left)
            picks, newQ, pe = greedy_residual(R, room, seg.Q, min_energy=thresh, zero_energy=zero)
            if picks.numel():
                slots = self._free_slots(picks.numel())  # (p,)
                js = cand[picks]  # (p,) block rows, in pick order
                self._raw[slots], self._sw[slots] = X[js], sw[js]
                self._times[slots], self._ids[slots], self._alive[slots] = t[js], ids[js], True
                self._mass[slots] = 1.0
                self._use[slots] = 1.0
                if self._out is not None:
                    self._out[slots] = X[js]
                if self._payload is not None:
                    self._payload[slots] = payload[js.to(payload.device)].to(self._payload.device,
                                                                             self._payload.dtype)
                # add in pick order (Schur complements are sequential)
                for i, (j, slot, e) in enumerate(zip(js.tolist(), slots.tolist(), pe.tolist())):
                    self._add(seg, slot, A[j], newQ[:, i], e)
                if seg.updates >= self.refresh_every:
                    self._refresh(seg)
                else:
                    self._set_scores(seg)
                left -= picks.numel()
            if picks.numel() < room or seg.rank < self._rank_cap:
                break  # stopped by the threshold: the rest of the block is explained
            keep = torch.ones(cand.numel(), dtype=torch.bool, device=cand.device)
            keep[picks] = False
            cand = cand[keep]

    def _evict(self):
        count = int(self._alive.sum()) if self._cap else 0
        evicted = []
        while count > self.budget:
            slot = int(torch.argmin(self._score))
            loss = float(self._score[slot])
            seg = self._seg_of[slot]
            self._remove(seg, slot)
            self._alive[slot] = False
            self._score[slot] = math.inf
            evicted.append((slot, loss))
            count -= 1
            if self.recycle == "nearest":
                self._merge_into_nearest(self._out[slot][None], self._mass[slot][None])
        if self.recycle == "cluster" and evicted:
            evicted.sort(key=lambda e: -e[1])
            top = torch.tensor([s for s, _ in evicted[: max(1, math.ceil(self.recycle_frac * len(evicted)))]],
                               device=self.device)
            merged, assign = density_peak_merge(self._out[top], max(1, math.ceil(top.numel() / 2)))
            mass = torch.zeros(merged.shape[0], dtype=torch.float64, device=self.device).index_add_(
                0, assign, self._mass[top])
            merged = torch.zeros_like(merged).index_add_(0, assign, self._out[top] * self._mass[top, None].float())
            self._merge_into_nearest(merged / mass[:, None].float(), mass)

    def _merge_into_nearest(self, toks: Tensor, mass: Tensor):
        alive = self._alive.nonzero().reshape(-1)
        if not alive.numel():
            return
        kept = self._out[alive]  # (k, d)
        sim = torch.nn.functional.normalize(toks, dim=1) @ torch.nn.functional.normalize(kept, dim=1).T
        near = alive[sim.argmax(dim=1)]  # (m,)
        for i in range(toks.shape[0]):
            j = int(near[i])
            mj, mi = float(self._mass[j]), float(mass[i])
            self._out[j] = (self._out[j] * mj + toks[i] * mi) / (mj + mi)
            self._mass[j] = mj + mi

    @property
    def memory(self) -> Memory:
        if not self._cap:
            d = self.d or 0
            return Memory(torch.zeros(0, d), torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.long),
                          None)
        alive = self._alive.nonzero().reshape(-1)
        alive = alive[torch.argsort(self._ids[alive])]
        toks = (self._out if self._out is not None else self._raw)[alive]
        pay = self._payload[alive] if self._payload is not None else None
        return Memory(toks, self._times[alive], self._ids[alive], pay)  # indexing already copies

    def final(self, k: int, relevance=None) -> Tensor:
        """Indices (ascending) into memory of at most k tokens for the LLM (question-aware with relevance)."""
        return final_select(self.memory, k, relevance, mode=self.question_mode, alpha=self.alpha,
                            refine=self.final_refine)

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


def memory_bytes(budget: int, d: int, *, payload_width: int = 0, recycle: bool = False) -> int:
    """Upper estimate of the bytes a StreamingSelector of `budget` tokens of dimension `d` holds once its
    memory is full: per slot (budget + 64 of them) the float32 token (twice with recycling), the payload
    row and the bookkeeping; the segments' bases S (r, d) and Q (d, r) float32 with doubling slack, and
    their float64 Gram inverses (sum of r^2 <= budget * min(budget, d)). The baselines hold less."""
    k, d, pw = check_budget(budget), int(d), max(0, int(payload_width))
    rows = k + 64
    per_row = 4 * d * (2 if recycle else 1) + 4 * pw + 8 * 6 + 4 + 1  # + sw, mass, use, times, ids, score, alive
    bases = 2 * 2 * 4 * d * k + 8 * k * min(k, d)
    return rows * per_row + bases


