"""streamprune.select: streaming subspace token selection (torch only).

make_selector(method, budget, **kw) builds any selector of METHODS; all share the Selector protocol
(push / memory / final, see ARCHITECTURE.md).
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor

from .baselines import (DedupSelector, DivPruneSelector, DPPSelector, L2Selector, OfflineSelector,
                        RandomSelector, UniformSelector, WindowSelector)
from .greedy import select_subspace
from .recycle import density_peak_merge
from .relevance import RESPRUNE_ALPHA, default_alpha, question_select, text_relevance
from .streaming import Memory, StreamingSelector, final_select, memory_bytes

METHODS = ("ours", "uniform", "random", "l2", "divprune", "dpp", "dedup", "offline", "window")
_CLASSES = {"ours": StreamingSelector, "uniform": UniformSelector, "random": RandomSelector,
            "l2": L2Selector, "divprune": DivPruneSelector, "dpp": DPPSelector, "dedup": DedupSelector,
            "offline": OfflineSelector, "window": WindowSelector}


class Selector(Protocol):
    budget: int
    tokens_seen: int

    def push(self, tokens: Tensor, time, *, weights=None, payload=None) -> None: ...

    @property
    def memory(self) -> Memory: ...

    def final(self, k: int, relevance=None) -> Tensor: ...


def make_selector(method: str, budget: int, **kw) -> Selector:
    """A selector of `method` (one of METHODS) keeping at most `budget` tokens; kw go to its constructor
    (e.g. novelty=, recycle= for "ours"; seed= for random; threshold= for dedup; device= for all)."""
    if method not in _CLASSES:
        raise ValueError(f"unknown selection method {method!r}; choose from {', '.join(METHODS)}")
    try:
        return _CLASSES[method](budget, **kw)
    except TypeError as e:
        raise ValueError(f"bad option for method {method!r}: {e}") from e


__all__ = ["METHODS", "Memory", "Selector", "StreamingSelector", "make_selector", "select_subspace",
           "question_select", "text_relevance", "density_peak_merge", "final_select", "default_alpha",
           "RESPRUNE_ALPHA", "memory_bytes", "UniformSelector", "RandomSelector", "L2Selector", "DivPruneSelector",
           "DPPSelector", "DedupSelector", "OfflineSelector", "WindowSelector"]
