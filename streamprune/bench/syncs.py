"""Count host syncs: calls of the torch operations that make the host wait for the device.

    from streamprune.bench.syncs import count_syncs

    with count_syncs() as n:
        sel.push(block)
    n["total"], n["item"], ...  # calls counted inside the block, by kind

On a CUDA tensor each counted call blocks the host until the device has finished the queued work (a value
is read back, or an output's size depends on the data); on a CPU tensor the same calls are counted though
they cost nothing, so a CPU test can assert that a function makes O(1) of them. Counted: Tensor.item,
__float__, __int__, __bool__, __index__, __complex__, tolist, numpy, cpu, to(<cpu device>), nonzero, and the
data-dependent-shape functions torch.nonzero, torch.argwhere, torch.masked_select, torch.unique,
torch.where(cond) (one argument) and boolean-mask indexing (x[mask], x[mask] = v). Not counted: syncs
inside compiled code or C++ (e.g. a CUDA kernel's own cudaMemcpy), print/format of a tensor beyond the
item it calls. Counting is a torch-function mode (torch.overrides.TorchFunctionMode): nothing in torch is
patched, the count covers the calling thread only, and blocks nest (an inner block's calls count in the outer
one too).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

__all__ = ["SYNC_METHODS", "SYNC_FUNCTIONS", "count_syncs"]

SYNC_METHODS = ("item", "__float__", "__int__", "__bool__", "__index__", "__complex__", "tolist", "numpy",
                "cpu", "nonzero")
SYNC_FUNCTIONS = ("nonzero", "argwhere", "masked_select", "unique")


def _has_bool_mask(idx) -> bool:
    items = idx if isinstance(idx, tuple) else (idx,)
    return any(isinstance(t, Tensor) and t.dtype == torch.bool for t in items)


def _to_cpu(args, kwargs) -> bool:
    dev = kwargs.get("device", args[0] if args else None)
    if isinstance(dev, Tensor):  # x.to(other): the other tensor's device
        dev = dev.device
    if isinstance(dev, (str, torch.device)):
        try:
            return torch.device(dev).type == "cpu"
        except (RuntimeError, TypeError):
            return False
    return False


_COUNTED = frozenset(SYNC_METHODS) | frozenset(SYNC_FUNCTIONS)


class _SyncCounter(TorchFunctionMode):
    """A torch-function mode that counts the calls listed in the module docstring (nothing is patched)."""

    def __init__(self, counts: dict):
        super().__init__()
        self.counts = counts

    def _hit(self, kind: str) -> None:
        self.counts["total"] += 1
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _COUNTED:
            self._hit(name)
        elif name in ("__getitem__", "__setitem__") and len(args) > 1 and _has_bool_mask(args[1]):
            self._hit("mask_index")
        elif name == "to" and _to_cpu(args[1:], kwargs):  # a read-back from the device (counted on CPU too)
            self._hit("to_cpu")
        elif name == "where" and len(args) + len(kwargs) == 1:
            self._hit("where")
        return func(*args, **kwargs)


@contextlib.contextmanager
def count_syncs() -> Iterator[dict]:
    """Count host-sync calls made inside the block (this thread); yields a dict {"total": int, <kind>: int}."""
    counts: dict = {"total": 0}
    with _SyncCounter(counts):
        yield counts
