"""Soak test of `live`: a long synthetic stream replayed as fast as possible through LiveSession with a tiny
model; resident memory and per-block time at the start vs the end (goal: both ratios <= 1.1).

    python -m streamprune.bench.live_soak                   # 2 hours at 1 fps
    python -m streamprune.bench.live_soak --hours 0.1 --markdown bench/RESULTS-live.md

The video is written once with PyAV (small frames, a new scene every 75 s, a moving box) and read back by
the same reader `streamprune live --source FILE` uses; questions are asked every --ask-every seconds of
stream time. "Start" is the window after a warm-up (default 5-15 % of the stream), "end" the last 10 %.
Per-block time is reported as wall time and as the worker thread's CPU time (torch runs on one thread here,
so CPU time is what the pipeline costs, independent of other load on a shared machine).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..live import LiveSession
from ..pipeline import AskConfig
from .ask_suite import synth_frames
from .report import write_outputs


def write_video(path: Path, seconds: float, *, fps: float = 1.0, size: int = 160) -> Path:
    import av

    c = av.open(str(path), "w")
    s = c.add_stream("mpeg4", rate=int(round(fps)))
    s.width = s.height = size
    s.pix_fmt = "yuv420p"
    for fr in synth_frames(seconds, fps=fps, size=(size, size)):
        for p in s.encode(av.VideoFrame.from_ndarray(fr.image, format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return path


def _window(xs, lo: float, hi: float):
    n = len(xs)
    return xs[int(lo * n): max(int(lo * n) + 1, int(hi * n))]


def run(args) -> dict:
    from rich.console import Console

    from ..models import load_model, write_tiny_model

    err = Console(stderr=True, soft_wrap=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    seconds = args.hours * 3600
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        video = write_video(tmp / "soak.mp4", seconds, fps=args.fps, size=args.size)
        err.print(f"wrote {seconds:.0f} s of video in {time.perf_counter() - t:.1f}s", highlight=False)
        adapter = load_model(str(write_tiny_model("qwen2_vl", tmp / "tiny")), device="cpu")
        qs = [(float(s), "What does the man pick up from the table?") for s in
              np.arange(args.ask_every, seconds, args.ask_every)]
        answers, samples = [], []  # samples: (stream time, rss MB, tokens kept)
        last = [0.0]

        def status(s):
            if s.stream_time - last[0] >= args.sample_every:
                last[0] = s.stream_time
                samples.append((s.stream_time, s.memory_mb, s.tokens_kept))
                if len(samples) % 20 == 0:
                    err.print(f"  t={s.stream_time:7.0f}s rss {s.memory_mb:.0f} MB kept {s.tokens_kept} "
                              f"{s.processed_fps:.0f} frames/s", highlight=False)

        cfg = AskConfig(budget=args.budget, memory=args.memory, fps=args.fps, max_new_tokens=2, thumbnails=0)
        session = LiveSession(adapter, cfg, str(video), questions=qs, on_answer=answers.append,
                              keep_block_times=True, realtime=args.realtime)
        t = time.perf_counter()
        stats = session.run(status=status)
        wall = time.perf_counter() - t
    bt = [w for w, _ in stats.block_times]
    ct = [c for _, c in stats.block_times]
    rss = [m for _, m, _ in samples]
    b0, b1 = _window(bt, args.warmup, args.warmup + 0.1), _window(bt, 0.9, 1.0)
    c0, c1 = _window(ct, args.warmup, args.warmup + 0.1), _window(ct, 0.9, 1.0)
    r0, r1 = _window(rss, args.warmup, args.warmup + 0.1), _window(rss, 0.9, 1.0)
    res = dict(
        stream_s=stats.stream_time, frames=stats.processed, dropped=stats.dropped, blocks=len(bt),
        realtime=bool(args.realtime), sampled=int(round(seconds * args.fps)), captured=stats.captured,
        rss_mb_first=rss[0] if rss else None, rss_mb_last=rss[-1] if rss else None,
        wall_s=wall, speed_x_realtime=stats.stream_time / wall if wall else None,
        tokens_seen=stats.tokens_seen, tokens_kept=stats.tokens_kept, max_kept=max(k for *_, k in samples),
        answers=len(answers), answer_errors=sum("error" in a for a in answers),
        answer_latency_first_s=answers[0].get("latency_s") if answers else None,
        answer_latency_last_s=answers[-1].get("latency_s") if answers else None,
        block_ms_start=1e3 * statistics.median(b0), block_ms_end=1e3 * statistics.median(b1),
        block_cpu_ms_start=1e3 * statistics.median(c0), block_cpu_ms_end=1e3 * statistics.median(c1),
        rss_mb_start=statistics.median(r0), rss_mb_end=statistics.median(r1),
        config=dict(hours=args.hours, fps=args.fps, size=args.size, budget=args.budget, memory=args.memory,
                    threads=torch.get_num_threads(), warmup=args.warmup),
    )
    res["block_time_ratio"] = res["block_ms_end"] / res["block_ms_start"]
    res["block_cpu_ratio"] = res["block_cpu_ms_end"] / res["block_cpu_ms_start"]
    res["rss_ratio"] = res["rss_mb_end"] / res["rss_mb_start"]
    return res


def to_markdown(r: dict) -> str:
    ok = lambda x: "yes" if x <= 1.1 else "NO"  # noqa: E731
    return "\n".join([
        "| stream | frames | wall (s) | x real time | tokens seen | kept (max) | answers | per-block wall ms start -> end "
        "| ratio | per-block CPU ms start -> end | ratio | RSS MB start -> end | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {r['stream_s'] / 3600:.2f} h | {r['frames']} | {r['wall_s']:.0f} | {r['speed_x_realtime']:.0f} | "
        f"{r['tokens_seen']} | {r['max_kept']} | {r['answers']} ({r['answer_errors']} errors) | "
        f"{r['block_ms_start']:.2f} -> {r['block_ms_end']:.2f} | {r['block_time_ratio']:.3f} ({ok(r['block_time_ratio'])}) | "
        f"{r['block_cpu_ms_start']:.2f} -> {r['block_cpu_ms_end']:.2f} | {r['block_cpu_ratio']:.3f} ({ok(r['block_cpu_ratio'])}) | "
        f"{r['rss_mb_start']:.0f} -> {r['rss_mb_end']:.0f} | {r['rss_ratio']:.3f} ({ok(r['rss_ratio'])}) |",
    ])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m streamprune.bench.live_soak", description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=2.0)
    p.add_argument("--fps", type=float, default=1.0)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--budget", type=int, default=64)
    p.add_argument("--memory", type=int, default=256)
    p.add_argument("--ask-every", type=float, default=600.0, help="stream seconds between questions")
    p.add_argument("--sample-every", type=float, default=30.0, help="stream seconds between RSS samples")
    p.add_argument("--warmup", type=float, default=0.05, help="fraction of the stream skipped before 'start'")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--realtime", action="store_true", help="replay at the file's own pace (live --realtime)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--markdown", type=Path, default=None)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    write_outputs(run(args), args, to_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
