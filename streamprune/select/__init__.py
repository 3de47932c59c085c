"""streamprune.select: streaming subspace token selection (torch only).

make_selector(method, budget, **kw) builds any selector of METHODS; all share the Selector protocol
(push / memory / final, see ARCHITECTURE.md).
"""

from __future__ import annotations

import warnings
from typing import Protocol

from torch import Tensor

from .baselines import (DedupSelector, DivPruneSelector, DPPSelector, L2Selector, OfflineSelector,
                        RandomSelector, UniformSelector, WindowSelector)
from .greedy import select_subspace
from .recycle import density_peak_merge
from .relevance import RESPRUNE_ALPHA, default_alpha, question_select, text_relevance
from .streaming import Memory, StreamingSelector, final_select, memory_bytes

METHODS = ("subspace", "uniform", "random", "l2", "divprune", "dpp", "dedup", "offline", "window")
# old name -> method; accepted for one release with a DeprecationWarning (once per name and process)
METHOD_ALIASES = {"ours": "subspace"}
_warned: set[str] = set()
_CLASSES = {"subspace": StreamingSelector, "uniform": UniformSelector, "random": RandomSelector,
            "l2": L2Selector, "divprune": DivPruneSelector, "dpp": DPPSelector, "dedup": DedupSelector,
            "offline": OfflineSelector, "window": WindowSelector}


class Selector(Protocol):
    budget: int
    tokens_seen: int

    def push(self, tokens: Tensor, time, *, weights=None, payload=None) -> None: ...

    @property
    def memory(self) -> Memory: ...

    @property
    def n_kept(self) -> int: ...  # len(memory), without gathering it

    def final(self, k: int, relevance=None) -> Tensor: ...


def canonical_method(method, *, stacklevel: int = 2) -> str:
    """The method's name in METHODS: an alias of METHOD_ALIASES ("ours") is mapped to its method with a
    DeprecationWarning (once per process, attributed `stacklevel` frames up); an unknown name is a one-line
    ValueError."""
    if isinstance(method, str) and method in METHOD_ALIASES:
        new = METHOD_ALIASES[method]
        if method not in _warned:
            _warned.add(method)
            warnings.warn(f"method {method!r} is now called {new!r}; the old name goes in the next release",
                          DeprecationWarning, stacklevel=stacklevel)
        return new
    if not isinstance(method, str) or method not in _CLASSES:
        raise ValueError(f"unknown selection method {method!r}; choose from {', '.join(METHODS)}")
    return method


def make_selector(method: str, budget: int, **kw) -> Selector:
    """A selector of `method` (one of METHODS, or the alias "ours" of "subspace") keeping at most `budget`
    tokens; kw go to its constructor (e.g. novelty=, recycle= for "subspace"; seed= for random; threshold=
    for dedup; device= for all)."""
    method = canonical_method(method, stacklevel=3)
    try:
        return _CLASSES[method](budget, **kw)
    except TypeError as e:
        raise ValueError(f"bad option for method {method!r}: {e}") from e


__all__ = ["METHODS", "METHOD_ALIASES", "canonical_method", "Memory", "Selector", "StreamingSelector", "make_selector", "select_subspace",
           "question_select", "text_relevance", "density_peak_merge", "final_select", "default_alpha",
           "RESPRUNE_ALPHA", "memory_bytes", "UniformSelector", "RandomSelector", "L2Selector", "DivPruneSelector",
           "DPPSelector", "DedupSelector", "OfflineSelector", "WindowSelector"]
