"""Push cost of the streaming engine at an earlier commit against the working tree, on the same blocks.

    python -m streamprune.bench.push_ab --rev 7f1555e [--only hard-1536-1024 ...] [--json F]

The engine of REV (`git show REV:streamprune/select/streaming.py`, imported beside the current package as
`streamprune.select.streaming_rev`, so it uses the current greedy / gram / relevance modules) and the current
one, plus the current one with fill="spread" (the policy before fill="local"), each push the same blocks in
turn, block by block (one torch thread, CPU time via time.thread_time). After the memory is full (2 K tokens
and 2 more blocks), `--blocks` blocks are timed: mean and max ms per block. "same kept" compares REV's
final memory ids with the current engine's. Streams: push_bench.stream_blocks ("hard", "lowrank", "effnet",
"pixel").
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ..select import streaming as current
from . import push_bench

CASES = (("hard", 1536, 256, 1024), ("hard", 3584, 256, 4096), ("lowrank", 1536, 256, 1024),
         ("lowrank", 3584, 256, 4096), ("effnet", 1280, 49, 512), ("pixel", 768, 196, 1024))


def engine_at(rev: str):
    """The streaming module of commit `rev` (a ValueError when git cannot show it)."""
    root = Path(__file__).resolve().parents[2]
    try:
        got = subprocess.run(["git", "show", f"{rev}:streamprune/select/streaming.py"], cwd=root,
                             capture_output=True, text=True)
    except OSError as e:  # no git on PATH
        raise ValueError(f"git show {rev}: {e}") from e
    if got.returncode:
        raise ValueError(f"git show {rev}: {got.stderr.strip() or 'failed'}")
    with tempfile.TemporaryDirectory() as tmp:  # the source is compiled by exec_module; the file can go
        path = Path(tmp) / "streaming_rev.py"
        path.write_text(got.stdout)
        spec = importlib.util.spec_from_file_location("streamprune.select.streaming_rev", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
    return mod


def row(rev_mod, stream: str, d: int, n: int, K: int, measure: int) -> dict:
    warm = -(-2 * K // n) + 2
    sels = {"rev": rev_mod.StreamingSelector(K), "now": current.StreamingSelector(K),
            "spread": current.StreamingSelector(K, fill="spread")}
    ms: dict[str, list[float]] = {k: [] for k in sels}
    for b, (t, x) in enumerate(push_bench.stream_blocks(stream, d, n, warm + measure)):
        for name, sel in sels.items():
            t0 = time.thread_time()
            sel.push(x, t)
            if b >= warm:
                ms[name].append((time.thread_time() - t0) * 1e3)
    out = {"stream": stream, "d": d, "n": n, "K": K, "blocks": measure,
           "same_kept": bool(torch.equal(sels["rev"].memory.ids, sels["now"].memory.ids))}
    for name, v in ms.items():
        out[f"{name}_ms"], out[f"{name}_max_ms"] = statistics.mean(v), max(v)
    out["speedup"] = out["rev_ms"] / out["now_ms"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m streamprune.bench.push_ab", description=__doc__.split("\n")[0])
    ap.add_argument("--rev", required=True, help="the earlier commit (anything git show takes)")
    ap.add_argument("--only", nargs="*", default=None, help="cases as STREAM-D-K, e.g. hard-1536-1024")
    ap.add_argument("--blocks", type=int, default=30, help="blocks timed per case after the memory is full")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    try:
        rev_mod = engine_at(a.rev)
    except ValueError as e:
        print(f"push_ab: {e}", file=sys.stderr)
        return 2
    rows = []
    print(f"| stream | d | block | K | {a.rev} ms (max) | now ms (max) | speedup | fill=spread ms (max) | same kept |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for stream, d, n, K in CASES:
        if a.only and f"{stream}-{d}-{K}" not in a.only:
            continue
        if stream == "effnet" and not push_bench.effnet_available():
            print("(effnet skipped: no feature cache or weights)", file=sys.stderr)
            continue
        r = row(rev_mod, stream, d, n, K, a.blocks)
        rows.append(r)
        print(f"| {stream} | {d} | {n} | {K} | {r['rev_ms']:.1f} ({r['rev_max_ms']:.0f}) | {r['now_ms']:.1f} "
              f"({r['now_max_ms']:.0f}) | {r['speedup']:.2f}x | {r['spread_ms']:.1f} ({r['spread_max_ms']:.0f}) | "
              f"{'yes' if r['same_kept'] else 'no'} |", flush=True)
    if a.json:
        a.json.write_text(json.dumps({"rev": a.rev, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
