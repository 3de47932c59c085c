"""Memory soak of the streaming selector: a long synthetic stream (default 1M tokens) pushed through
`StreamingSelector` at a budget below and above the feature dimension (the K >= d trap), checking the
invariants the whole way: memory never above its budget, the bases orthonormal, resident memory flat.

    python -m streamprune.bench.soak                        # 1M tokens, d = 256, K = 128 and K = 1024
    python -m streamprune.bench.soak --tokens 100000 --json out/soak.json

Reported per (d, K): tokens pushed, the largest memory seen (must be <= K), the worst orthonormality error
||Q^T Q - I|| over the segment bases (sampled every 10 blocks), RSS when the memory first filled and at the
end, their ratio, the selector's own tensor bytes then and at the end, the smallest memory after it first
filled (must stay K: the budget is spent), and selection ms per block early vs late and the largest.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from ..select import StreamingSelector
from .push_bench import held_bytes
from ..memprobe import rss_mb
from .streams import synthetic_stream


def soak(d: int, K: int, *, tokens: int = 1_000_000, per_block: int = 100, seed: int = 0,
         progress=None) -> dict:
    n_blocks = max(1, tokens // per_block)
    stream = synthetic_stream(n_blocks, per_block, d, rank=16, needles=0, scene_len=10, noise=0.1, drift=0.05,
                              seed=seed)
    sel = StreamingSelector(K)
    max_mem, worst, rss_full, full_at, held_full = 0, 0.0, None, None, None
    early, late = [], []
    max_dt, min_after = 0.0, K
    t_start = time.perf_counter()
    for b, (t, x) in enumerate(stream):
        t0 = time.perf_counter()
        sel.push(x, t)
        dt = time.perf_counter() - t0
        n = len(sel.memory)
        max_mem = max(max_mem, n)
        max_dt = max(max_dt, dt)
        if rss_full is not None:
            min_after = min(min_after, n)
        if rss_full is None and n >= K:
            rss_full, full_at, held_full = rss_mb(), sel.tokens_seen, held_bytes(sel)
        if b % 10 == 0:
            worst = max(worst, sel.orthonormality_error())
        (early if b < n_blocks // 10 else late if b >= n_blocks - n_blocks // 10 else []).append(dt)
        if progress and b % 1000 == 0:
            progress(f"d={d} K={K}: block {b}/{n_blocks}, {n} kept, {sel.n_segments} segments")
    rss_end = rss_mb()
    worst = max(worst, sel.orthonormality_error())
    return {"d": d, "K": K, "tokens": sel.tokens_seen, "tokens_per_block": per_block, "max_memory": max_mem,
            "budget_respected": max_mem <= K, "orthonormality_max": worst,
            "memory_full_at_tokens": full_at, "rss_mb_memory_full": rss_full, "rss_mb_end": rss_end,
            "rss_end_over_full": (rss_end / rss_full) if rss_full else None,
            "ms_per_block_early": 1e3 * sum(early) / max(1, len(early)),
            "ms_per_block_late": 1e3 * sum(late) / max(1, len(late)),
            "held_mb_memory_full": held_full / 2**20 if held_full else None,
            "held_mb_end": held_bytes(sel) / 2**20, "min_memory_after_full": min_after,
            "ms_per_block_max": 1e3 * max_dt, "segments_end": sel.n_segments, "seconds": time.perf_counter() - t_start}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m streamprune.bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--budgets", type=int, nargs="+", default=[128, 1024], help="K values (below and above d)")
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    res = [soak(a.d, K, tokens=a.tokens, progress=lambda m: print(m, file=sys.stderr)) for K in a.budgets]
    for r in res:
        print(json.dumps(r))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0 if all(r["budget_respected"] for r in res) else 1


if __name__ == "__main__":
    sys.exit(main())
