"""Peak memory of torch tensors: CUDA allocator stats on GPU, a dispatch-level tracker on CPU.

On CPU torch has no allocator statistics, so `TensorMemoryTracker` follows every tensor storage created
while it is active (factory calls and op outputs that do not alias an input) until that storage is freed,
and records the peak of the sum. It slows small ops down, so benches use it on a short sample of work
(never inside timed loops). Storages created before the tracker started are not counted: add the state
size (`tensor_bytes`) yourself.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class TensorMemoryTracker(TorchDispatchMode):
    """with TensorMemoryTracker() as m: ...; m.peak_bytes, m.live_bytes (new storages only)."""

    def __init__(self):
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self._live: dict[int, int] = {}  # storage data_ptr -> bytes

    def _free(self, key: int) -> None:
        self.live_bytes -= self._live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        ins = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
               if isinstance(t, torch.Tensor) and t.device.type != "meta"}
        out = func(*args, **kwargs)
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            st = t.untyped_storage()
            key, nb = st.data_ptr(), st.nbytes()
            if nb == 0 or key in ins or key in self._live:
                continue
            self._live[key] = nb
            self.live_bytes += nb
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
            weakref.finalize(st, self._free, key)
        return out


def tensor_bytes(obj, _seen=None, _depth=0) -> int:
    """Bytes of distinct tensor storages reachable from obj (attributes, dicts, lists; depth <= 4)."""
    seen = set() if _seen is None else _seen
    if _depth > 4 or id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        st = obj.untyped_storage()
        key = ("st", st.data_ptr())
        if key in seen:
            return 0
        seen.add(key)
        return st.nbytes()
    if isinstance(obj, dict):
        items = list(obj.values())
    elif isinstance(obj, (list, tuple, set)):
        items = list(obj)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        items = list(vars(obj).values())
    else:
        items = []
        for name in getattr(type(obj), "__slots__", ()):
            if hasattr(obj, name):
                items.append(getattr(obj, name))
    return sum(tensor_bytes(v, seen, _depth + 1) for v in items)
