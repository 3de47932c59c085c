"""Baseline selectors with the same Selector protocol as StreamingSelector (docs/design.md §3.5).

Written from the papers' descriptions. Each keeps at most `budget` tokens after every push (except where
noted), assigns ids in arrival order, and implements final(k, relevance) like ours (greedy subspace
re-selection of the memory; question-aware with relevance). `weights` are used by dpp (relevance of the
CDPruner kernel) and offline (weighted greedy); the other baselines ignore them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .greedy import check_budget, check_k, refine_swaps, select_subspace
from .relevance import MODES
from .streaming import Memory, Snapshots, check_block


class _Kept(Snapshots):
    """Shared storage: kept tokens (ordered by id), validation, final() (question_mode and alpha as for
    StreamingSelector: see relevance.question_select)."""

    def __init__(self, budget: int, *, seed: int = 0, device=None, question_mode: str = "resprune",
                 alpha: float = 0.3):
        if question_mode not in MODES:
            raise ValueError(f"question_mode must be one of {MODES}, got {question_mode!r}")
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
        self.question_mode, self.alpha = question_mode, float(alpha)
        self.budget, self.seed = check_budget(budget), int(seed)
        self.device = None if device is None else torch.device(device)
        self.tokens_seen = 0
        self.d: int | None = None
        self.blocks_seen = 0
        self._tok = self._times = self._ids = self._pay = self._w = None
        self._has_payload: bool | None = None

    def _validate(self, tokens, time, weights, payload):
        X, t, w, payload = check_block(tokens, time, weights, payload, d=self.d, device=self.device,
                                       payload_shape=None if self._pay is None else self._pay.shape[1:],
                                       has_payload=self._has_payload)
        return X, t, (w if w is not None else torch.ones(X.shape[0], device=X.device)), payload

    def push(self, tokens, time, *, weights=None, payload=None) -> None:
        X, t, w, payload = self._validate(tokens, time, weights, payload)
        n = X.shape[0]
        if n == 0:
            return
        if self.d is None:
            self.d, self.device = X.shape[1], X.device
            self._has_payload = payload is not None
            self._tok, self._times = X[:0], t[:0]
            self._ids, self._w = torch.zeros(0, dtype=torch.long, device=X.device), w[:0]
            self._pay = payload[:0] if payload is not None else None
        ids = torch.arange(self.tokens_seen, self.tokens_seen + n, device=X.device)
        self.tokens_seen += n
        self._changed()
        self._push(X, t, w, ids, payload)
        self.blocks_seen += 1

    def _append(self, X, t, w, ids, payload):
        self._tok, self._times = torch.cat([self._tok, X]), torch.cat([self._times, t])
        self._ids, self._w = torch.cat([self._ids, ids]), torch.cat([self._w, w])
        if self._pay is not None:
            self._pay = torch.cat([self._pay, payload])

    def _keep(self, idx: Tensor, *, sort: bool = True):
        """Keep rows idx of the current store (in index order = id order when sort, else as given)."""
        if sort:
            idx = torch.sort(idx).values
        self._tok, self._times, self._ids, self._w = self._tok[idx], self._times[idx], self._ids[idx], self._w[idx]
        if self._pay is not None:
            self._pay = self._pay[idx]

    def _push(self, X, t, w, ids, payload):  # pragma: no cover - abstract
        raise NotImplementedError

    def _gather(self) -> Memory:
        if self._tok is None:
            return Memory(torch.zeros(0, self.d or 0), torch.zeros(0, dtype=torch.float64),
                          torch.zeros(0, dtype=torch.long), None)
        return Memory(self._tok.clone(), self._times.clone(), self._ids.clone(),
                      self._pay.clone() if self._pay is not None else None)

    @property
    def n_kept(self) -> int:
        """Tokens in memory (= len(memory), without gathering it)."""
        return 0 if self._ids is None else int(self._ids.numel())

    def final(self, k: int, relevance=None) -> Tensor:
        return self._final(k, relevance, mode=self.question_mode, alpha=self.alpha)


class _Reselect(_Kept):
    """Append the block, then re-select `budget` tokens of memory + block with `_choose`."""

    def _push(self, X, t, w, ids, payload):
        self._append(X, t, w, ids, payload)
        if self._ids.numel() > self.budget:
            self._keep(self._choose())

    def _choose(self) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class WindowSelector(_Kept):
    """No selection: every token is kept while the memory has room, then the most recent `budget` tokens
    (a sliding window). `final(k)` gives the most recent k. With a budget above the video's token count this
    hands the LLM every token, e.g. to run the in-decoder stage alone."""

    def _push(self, X, t, w, ids, payload):
        self._append(X, t, w, ids, payload)
        n = self._ids.numel()
        if n > self.budget:
            self._keep(torch.arange(n - self.budget, n, device=self._ids.device), sort=False)

    def final(self, k: int, relevance=None) -> Tensor:
        n = 0 if self._ids is None else int(self._ids.numel())
        k = min(check_k(k), n)
        return torch.arange(n - k, n, device=self.device)


class UniformSelector(_Kept):
    """Temporally uniform frames: keep blocks whose index is a multiple of a stride; the stride doubles
    whenever the kept blocks hold more than `budget` tokens (a single over-long block keeps evenly spaced
    tokens)."""

    def __init__(self, budget: int, **kw):
        super().__init__(budget, **kw)
        self.stride = 1
        self._block = torch.zeros(0, dtype=torch.long)

    def _push(self, X, t, w, ids, payload):
        b = self.blocks_seen
        if b % self.stride:
            return
        self._append(X, t, w, ids, payload)
        self._block = torch.cat([self._block, torch.full((X.shape[0],), b, dtype=torch.long)])
        while self._ids.numel() > self.budget and (self._block % (2 * self.stride) == 0).any() \
                and self._block.unique().numel() > 1:
            self.stride *= 2
            keep = (self._block % self.stride == 0).nonzero().reshape(-1)
            self._keep(keep.to(self._tok.device))
            self._block = self._block[keep]
        if self._ids.numel() > self.budget:  # one block left, still too long
            m = self._ids.numel()
            keep = torch.linspace(0, m - 1, self.budget).round().long().unique()
            self._keep(keep.to(self._tok.device))
            self._block = self._block[keep]


class RandomSelector(_Kept):
    """Seeded reservoir sampling (Algorithm R) over tokens: a uniform random K-subset of all tokens seen."""

    def __init__(self, budget: int, **kw):
        super().__init__(budget, **kw)
        self._gen = torch.Generator().manual_seed(self.seed)

    def _push(self, X, t, w, ids, payload):
        n = X.shape[0]
        start = self.tokens_seen - n
        fill = max(0, min(n, self.budget - self._ids.numel()))
        if fill:
            self._append(X[:fill], t[:fill], w[:fill], ids[:fill], payload[:fill] if payload is not None else None)
        if fill == n:
            return
        seen = torch.arange(start + fill, start + n, dtype=torch.float64) + 1  # tokens seen incl. this one
        r = (torch.rand(n - fill, generator=self._gen, dtype=torch.float64) * seen).floor().long()  # in [0, i]
        slot_of = {}
        for i in (r < self.budget).nonzero().reshape(-1).tolist():
            slot_of[int(r[i])] = fill + i  # later tokens replace earlier ones in the same slot
        if not slot_of:
            return
        # slots are positions in the id-ordered store; replacing keeps order by re-sorting
        pos = torch.tensor(list(slot_of.keys()), device=self._tok.device)
        src = torch.tensor(list(slot_of.values()), device=self._tok.device)
        self._tok[pos], self._times[pos], self._ids[pos], self._w[pos] = X[src], t[src], ids[src], w[src]
        if self._pay is not None:
            self._pay[pos] = payload[src]
        self._keep(torch.argsort(self._ids), sort=False)


class L2Selector(_Reselect):
    """Top-K tokens by L2 norm (ties: earlier id)."""

    def _choose(self):
        return torch.sort(-self._tok.norm(dim=1), stable=True).indices[: self.budget]


class DivPruneSelector(_Reselect):
    """DivPrune: max-min diversity under cosine distance, greedy. First the token whose minimum cosine
    distance to all others is largest, then repeatedly the token farthest (max of min distance) from the
    selected set; re-run on memory + block after each push."""

    def _choose(self):
        Xn = torch.nn.functional.normalize(self._tok, dim=1)
        D = 1.0 - Xn @ Xn.T  # (m, m) cosine distance
        m = D.shape[0]
        D.fill_diagonal_(math.inf)
        first = int(torch.argmax(D.min(dim=1).values))
        D.fill_diagonal_(0.0)
        chosen = [first]
        mind = D[first].clone()
        mind[first] = -math.inf
        for _ in range(min(self.budget, m) - 1):
            j = int(torch.argmax(mind))
            chosen.append(j)
            mind = torch.minimum(mind, D[j])
            mind[j] = -math.inf
        return torch.tensor(chosen, device=self._tok.device)


class DPPSelector(_Reselect):
    """CDPruner-style DPP: kernel L = diag(q) S diag(q), S = cosine similarity, q = relevance (push
    weights, default 1); greedy MAP = pivoted QR on normalised rows scaled by q. Re-run after each push."""

    def _choose(self):
        Xn = torch.nn.functional.normalize(self._tok, dim=1)
        return select_subspace(Xn, self.budget, self._w.pow(2))


class DedupSelector(_Kept):
    """Temporal dedup (DyCoke / EVS style): a token whose cosine similarity to the token at the same position
    in the previous block exceeds `threshold` is dropped; kept tokens carry novelty = 1 - that similarity
    (1 for the first block, a block of a different length, or a zero previous token); when over budget the
    least novel are evicted (ties: oldest first)."""

    def __init__(self, budget: int, *, threshold: float = 0.9, **kw):
        super().__init__(budget, **kw)
        self.threshold = float(threshold)
        self._prev: Tensor | None = None
        self._nov = torch.zeros(0, dtype=torch.float64)

    def _push(self, X, t, w, ids, payload):
        if self._prev is not None and self._prev.shape == X.shape:
            cos = torch.nn.functional.cosine_similarity(X, self._prev, dim=1)
            cos = torch.where((self._prev.norm(dim=1) > 0) & (X.norm(dim=1) > 0), cos, torch.zeros_like(cos))
            nov = (1.0 - cos).double()
        else:
            nov = torch.ones(X.shape[0], dtype=torch.float64, device=X.device)
        self._prev = X
        new = (nov > 1.0 - self.threshold).nonzero().reshape(-1)
        if not new.numel():
            return
        self._append(X[new], t[new], w[new], ids[new], payload[new] if payload is not None else None)
        self._nov = torch.cat([self._nov.to(X.device), nov[new]])
        if self._ids.numel() > self.budget:
            # most novel first; among equals the newest first, so the oldest go
            order = torch.sort(-self._ids.double(), stable=True).indices
            order = order[torch.sort(-self._nov[order], stable=True).indices][: self.budget]
            order = torch.sort(order).values
            self._keep(order)
            self._nov = self._nov[order]


class OfflineSelector(_Kept):
    """Non-streaming reference: buffers every token; `memory` runs weighted greedy subspace selection over
    the whole video (K tokens); refine=True then improves it with swaps (greedy.refine_swaps, lower
    reconstruction error). Memory use grows with the video (that is the point of the reference)."""

    def __init__(self, budget: int, *, refine: bool = False, **kw):
        super().__init__(budget, **kw)
        self.refine = bool(refine)
        self._cache: Memory | None = None
        self._parts: list = []

    def _push(self, X, t, w, ids, payload):
        self._parts.append((X, t, w, ids, payload))
        self._cache = None

    @property
    def n_kept(self) -> int:
        return min(self.budget, self.tokens_seen)  # select_subspace returns min(K, n) rows

    @property
    def memory(self) -> Memory:
        if self._cache is None:
            if not self._parts:
                return super().memory
            X, t, w, ids = (torch.cat([p[i] for p in self._parts]) for i in range(4))
            pay = torch.cat([p[4] for p in self._parts]) if self._parts[0][4] is not None else None
            self._parts = [(X, t, w, ids, pay)]
            idx = select_subspace(X, self.budget, w)
            if self.refine:
                idx = refine_swaps(X, idx, weights=w)
            idx = torch.sort(idx).values
            self._cache = Memory(X[idx], t[idx], ids[idx], pay[idx] if pay is not None else None)
        return self._cache
