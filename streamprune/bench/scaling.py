"""`streamprune bench --suite scaling`: prefill time and memory vs video length, full tokens vs pruned.

Random-weight models with real configs (models.PRESETS; `name:layers=N,depth=M` derives a shallower
variant for CPU). One 2-frame block is encoded by the model's own vision tower, then repeated along time
(plus noise, so every block is new content for the selector); the LLM prefill runs on all tokens ("full")
or on the `budget` tokens our streaming selector keeps ("pruned"). Out-of-memory is caught and recorded
(status "oom"); the other units go on. peak_mb = tensor memory above the model weights during prefill
(CUDA allocator on GPU, the dispatch tracker on CPU).

    streamprune bench --suite scaling --quick
    streamprune bench --suite scaling --model random:qwen2-vl-7b --device cuda --frames 256,1024,4096

Models: --model (random:PRESET[:layers=N,depth=M] or tiny:FAMILY) runs that one; else the `presets` option;
else qwen2-vl-2b and -7b on a GPU, a 2-layer qwen2-vl-2b on a CPU.
"""

from __future__ import annotations

import gc
import time
import weakref

import numpy as np
import torch

from .memtrack import TensorMemoryTracker
from .protocol import Option, SuiteOptions, ints, model_kind, positive, strs
from .report import markdown_for
from .runner import Unit

CPU_PRESETS = ("qwen2-vl-2b:layers=2,depth=1",)
GPU_PRESETS = ("qwen2-vl-2b", "qwen2-vl-7b")
CPU_FRAMES = (4, 16, 64)
GPU_FRAMES = (16, 64, 256, 1024, 2048, 4096)
QUESTION = "What happens in the video?"
TITLE = "scaling: prefill time and memory vs video length, every token vs pruned"
OPTIONS = (
    Option("presets", strs, None, "comma-separated presets (PRESET[:layers=N,depth=M] or tiny:FAMILY)"),
    Option("frames", ints, None, "comma-separated frame counts (default by device)"),
    Option("budgets", ints, None, "token budget of the pruned arm (the first of the list; default 1024 GPU, 128 CPU)"),
    Option("size", positive(int), None, "frame side in pixels (default 448 GPU, 224 CPU)"),
)


def parse_preset(spec: str) -> tuple[str, dict]:
    """'qwen2-vl-2b:layers=2,depth=1' -> ('qwen2-vl-2b', {'layers': 2, 'depth': 1});
    'tiny:qwen2_vl' -> ('tiny', {'family': 'qwen2_vl'}) (a tiny random model, for tests and smoke runs)."""
    from ..models import FAMILIES, PRESETS

    base, _, opts = spec.partition(":")
    if base == "tiny":
        if opts not in FAMILIES:
            raise ValueError(f"tiny preset needs a family: tiny:<{'|'.join(FAMILIES)}>, got {spec!r}")
        return base, {"family": opts}
    if base not in PRESETS:
        raise ValueError(f"unknown preset {base!r}; choose one of {', '.join(PRESETS)} (optionally :layers=N,depth=M)")
    over = {}
    for kv in filter(None, opts.split(",")):
        k, _, v = kv.partition("=")
        if k not in ("layers", "depth") or not v.isdigit() or int(v) < 1:
            raise ValueError(f"bad preset option {kv!r} (layers=N or depth=M, N, M >= 1)")
        over[k] = int(v)
    return base, over


_MODEL: dict = {}


def get_model(spec: str, device: str | None, dtype: str | None):
    """Build (once per process) the random-weight adapter for a preset spec."""
    key = (spec, device, dtype)
    if key in _MODEL:
        return _MODEL[key]
    from ..models import build_random_model

    _MODEL.clear()
    gc.collect()
    base, over = parse_preset(spec)
    if base == "tiny":
        import tempfile

        from ..models import load_model, write_tiny_model

        path = write_tiny_model(over["family"], tempfile.mkdtemp(prefix="streamprune-tiny-"))
        _MODEL[key] = load_model(str(path), device=device, dtype=dtype)
        return _MODEL[key]
    _MODEL[key] = build_random_model(base, device=device, dtype=dtype, **over)  # over: layers / depth
    return _MODEL[key]


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, (MemoryError, torch.OutOfMemoryError)) or "out of memory" in str(e).lower()


def _peak_context(device: torch.device):
    if device.type == "cuda":
        class _Cuda:
            def __enter__(self):
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                self.base = torch.cuda.memory_allocated(device)
                return self

            def __exit__(self, *exc):
                torch.cuda.synchronize(device)
                self.peak_bytes = torch.cuda.max_memory_allocated(device) - self.base
                return False
        return _Cuda()
    return TensorMemoryTracker()


_WARM = weakref.WeakSet()  # adapters already warmed (not ids: a freed model's id can be reused)


def _warm_up(ad, blk) -> None:
    """One untimed prefill per model and process (first calls pay one-off allocation and dispatch costs)."""
    from ..select import Memory

    if ad in _WARM:
        return
    _WARM.add(ad)
    ad.prefill(Memory(blk.tokens, blk.times, torch.arange(len(blk)), blk.payload), QUESTION)


def measure(spec: str, mode: str, frames: int, budget: int, size: int, device, dtype, seed: int = 0) -> dict:
    """One (preset, mode, frames) point: build memory, select (pruned), prefill; times and peak memory."""
    from ..select import Memory, make_selector

    ad = get_model(spec, device, dtype)
    dev = ad.device
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (ad.frames_per_block, size, size, 3), dtype=np.uint8)
    blk = ad.encode(img, [0.0, 0.5][: ad.frames_per_block])  # one real block through the vision tower
    _warm_up(ad, blk)
    n_blocks = max(1, frames // ad.frames_per_block)
    period = 0.5 * ad.frames_per_block
    g = torch.Generator(device="cpu").manual_seed(seed)
    scale = float(blk.tokens.float().std())
    row = {"preset": spec, "device": dev.type, "mode": mode, "frames": n_blocks * ad.frames_per_block,
           "visual_tokens": n_blocks * len(blk), "budget": budget, "status": "ok", "select_s": 0.0}
    try:
        def block(b):
            noise = torch.randn(blk.tokens.shape, generator=g) * scale
            return blk.tokens.float() + noise.to(blk.tokens.device)  # (n, d)

        t0 = time.perf_counter()
        if mode == "full":
            toks = torch.cat([block(b) for b in range(n_blocks)])
            times = torch.cat([blk.times + b * period for b in range(n_blocks)])
            mem = Memory(toks.to(ad.dtype), times, torch.arange(toks.shape[0]), blk.payload.repeat(n_blocks, 1))
        elif mode == "pruned":
            sel = make_selector("subspace", budget)
            for b in range(n_blocks):
                sel.push(block(b), blk.times + b * period, payload=blk.payload)
            m = sel.memory
            keep = sel.final(budget)
            mem = Memory(m.tokens[keep].to(ad.dtype), m.times[keep], m.ids[keep], m.payload[keep])
        else:
            raise ValueError(f"mode must be full or pruned, got {mode!r}")
        row["select_s"] = time.perf_counter() - t0 if mode == "pruned" else 0.0
        row["llm_tokens"] = len(mem)
        with _peak_context(dev) as pk:
            t0 = time.perf_counter()
            ad.prefill(mem, QUESTION)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            row["prefill_s"] = time.perf_counter() - t0
        row["peak_mb"] = pk.peak_bytes / 2**20
    except Exception as e:  # noqa: BLE001 - OOM is a result here, anything else is re-raised
        if not _is_oom(e):
            raise
        row.update(status="oom", prefill_s=None, peak_mb=None)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    finally:
        gc.collect()
    return row


def make_plan(presets, frames, budget: int, size: int, device, dtype) -> list[Unit]:
    units = []
    for p in presets:
        parse_preset(p)
        for f in frames:
            for mode in ("full", "pruned"):
                units.append(Unit(f"scaling/{p}/{mode}/f{f}", {"preset": p, "mode": mode, "frames": int(f),
                                                               "budget": int(budget), "size": int(size),
                                                               "device": device, "dtype": dtype}))
    return units


def _preset_of(model: str) -> str:
    kind, value = model_kind(model)
    if kind == "tiny":
        return f"tiny:{value}"
    if kind == "random":
        return value
    raise ValueError(f"the scaling suite builds random-weight models: --model random:PRESET or tiny:FAMILY, "
                     f"not {model!r}")


def plan(opts: SuiteOptions) -> list[Unit]:
    x = opts.extra
    gpu = (opts.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if opts.model is not None:
        presets = [_preset_of(opts.model)]
    else:
        presets = x["presets"] or list(GPU_PRESETS if gpu else CPU_PRESETS)
    frames = x["frames"] or list(GPU_FRAMES if gpu else CPU_FRAMES)
    if opts.quick and not x["frames"]:
        frames = frames[:2]
    budget = (x["budgets"] or [1024 if gpu else 128])[0]
    size = x["size"] or (448 if gpu else 224)
    return make_plan(presets, frames, budget, size, opts.device, opts.dtype)


def run_unit(unit: Unit, opts: SuiteOptions) -> list[dict]:
    p = unit.params
    return [measure(p["preset"], p["mode"], p["frames"], p["budget"], p["size"], p["device"], p["dtype"])]


def report(rows: list[dict], opts: SuiteOptions) -> str:
    return markdown_for("scaling", rows, title=TITLE,
                        notes=["wall time; other work may share the cores",
                               "peak_mb: tensor memory above the weights during prefill"])


def plots(rows: list[dict], opts: SuiteOptions, folder) -> list:
    from .plots import plot_scaling

    return [plot_scaling(rows, folder)]
