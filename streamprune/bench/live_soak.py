"""Soak test of `live`: a long synthetic stream replayed as fast as possible through LiveSession with a tiny
model; resident memory and per-block time at the start vs the end (goal: both ratios <= 1.1).

    streamprune bench --suite live-soak                      # 2 hours at 1 fps
    streamprune bench --suite live-soak --opt hours=0.1 --out out/soak

The video is written once with PyAV (bench.clips.write_scene_video: small frames, a new scene every 75 s, a
moving box) and read back by the same reader `streamprune live --source FILE` uses; questions are asked every
`ask_every` seconds of stream time. "Start" is the window after a warm-up (default 5-15 % of the stream),
"end" the last 10 %. Per-block time is reported as wall time and as the worker thread's CPU time (torch runs
on one thread here, so CPU time is what the pipeline costs, independent of other load on a shared machine).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..live import LiveSession
from ..pipeline import AskConfig
from .clips import write_scene_video
from .protocol import Option, SuiteOptions, boolean, load_adapter, positive
from .runner import Unit

TITLE = "live-soak: memory and per-block time at the start vs the end of a long live stream"
THREADS = 1
OPTIONS = (
    Option("hours", positive(float), 2.0, "stream length", quick_default=0.05),
    Option("fps", positive(float), 1.0, "frames per second of the synthetic stream"),
    Option("size", positive(int), 160, "frame side (pixels)"),
    Option("budget", positive(int), 64, "visual tokens to the LLM"),
    Option("memory", positive(int), 256, "streaming memory (tokens)"),
    Option("ask_every", positive(float), 600.0, "stream seconds between questions", quick_default=60.0),
    Option("sample_every", positive(float), 30.0, "stream seconds between RSS samples", quick_default=5.0),
    Option("warmup", float, 0.05, "fraction of the stream skipped before 'start'"),
    Option("realtime", boolean, False, "replay at the file's own pace (live --realtime)"),
)


def _window(xs, lo: float, hi: float):
    n = len(xs)
    return xs[int(lo * n): max(int(lo * n) + 1, int(hi * n))]


def plan(opts: SuiteOptions) -> list[Unit]:
    return [Unit("live-soak", {**opts.extra, "model": opts.model, "device": opts.device, "dtype": opts.dtype})]


def run_unit(unit: Unit, opts: SuiteOptions) -> list[dict]:
    from rich.console import Console

    a = unit.params
    err = Console(stderr=True, soft_wrap=True)
    seconds = a["hours"] * 3600
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        video = write_scene_video(tmp / "soak.mp4", seconds, fps=a["fps"], size=a["size"])
        err.print(f"wrote {seconds:.0f} s of video in {time.perf_counter() - t:.1f}s", highlight=False)
        adapter = load_adapter(a["model"], tmp, device=a["device"], dtype=a["dtype"])
        qs = [(float(s), "What does the man pick up from the table?") for s in
              np.arange(a["ask_every"], seconds, a["ask_every"])]
        answers, samples = [], []  # samples: (stream time, rss MB, tokens kept)
        last = [0.0]

        def status(s):
            if s.stream_time - last[0] >= a["sample_every"]:
                last[0] = s.stream_time
                samples.append((s.stream_time, s.memory_mb, s.tokens_kept))
                if len(samples) % 20 == 0:
                    err.print(f"  t={s.stream_time:7.0f}s rss {s.memory_mb:.0f} MB kept {s.tokens_kept} "
                              f"{s.processed_fps:.0f} frames/s", highlight=False)

        cfg = AskConfig(budget=a["budget"], memory=a["memory"], fps=a["fps"], max_new_tokens=2, thumbnails=0)
        session = LiveSession(adapter, cfg, str(video), questions=qs, on_answer=answers.append,
                              keep_block_times=True, realtime=a["realtime"])
        t = time.perf_counter()
        stats = session.run(status=status)
        wall = time.perf_counter() - t
    bt = [w for w, _ in stats.block_times]
    ct = [c for _, c in stats.block_times]
    rss = [m for _, m, _ in samples]
    b0, b1 = _window(bt, a["warmup"], a["warmup"] + 0.1), _window(bt, 0.9, 1.0)
    c0, c1 = _window(ct, a["warmup"], a["warmup"] + 0.1), _window(ct, 0.9, 1.0)
    r0, r1 = _window(rss, a["warmup"], a["warmup"] + 0.1), _window(rss, 0.9, 1.0)
    res = dict(
        stream_s=stats.stream_time, frames=stats.processed, dropped=stats.dropped, blocks=len(bt),
        realtime=bool(a["realtime"]), sampled=int(round(seconds * a["fps"])), captured=stats.captured,
        rss_mb_first=rss[0] if rss else None, rss_mb_last=rss[-1] if rss else None,
        wall_s=wall, speed_x_realtime=stats.stream_time / wall if wall else None,
        tokens_seen=stats.tokens_seen, tokens_kept=stats.tokens_kept, max_kept=max((k for *_, k in samples), default=stats.tokens_kept),
        answers=len(answers), answer_errors=sum("error" in ans for ans in answers),
        answer_latency_first_s=answers[0].get("latency_s") if answers else None,
        answer_latency_last_s=answers[-1].get("latency_s") if answers else None,
        block_ms_start=1e3 * statistics.median(b0), block_ms_end=1e3 * statistics.median(b1),
        block_cpu_ms_start=1e3 * statistics.median(c0), block_cpu_ms_end=1e3 * statistics.median(c1),
        rss_mb_start=statistics.median(r0), rss_mb_end=statistics.median(r1),
        model=a["model"] or "tiny", hours=a["hours"], fps=a["fps"], size=a["size"], budget=a["budget"],
        memory=a["memory"], threads=torch.get_num_threads(), warmup=a["warmup"],
    )
    res["block_time_ratio"] = res["block_ms_end"] / res["block_ms_start"]
    res["block_cpu_ratio"] = res["block_cpu_ms_end"] / res["block_cpu_ms_start"]
    res["rss_ratio"] = res["rss_mb_end"] / res["rss_mb_start"]
    return [res]


def report(rows: list[dict], opts: SuiteOptions) -> str:
    ok = lambda x: "yes" if x <= 1.1 else "NO"  # noqa: E731
    lines = [f"## {TITLE}", "",
             "| stream | frames | wall (s) | x real time | tokens seen | kept (max) | answers | per-block wall ms "
             "start -> end | ratio | per-block CPU ms start -> end | ratio | RSS MB start -> end | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['stream_s'] / 3600:.2f} h | {r['frames']} | {r['wall_s']:.0f} | {r['speed_x_realtime']:.0f} | "
            f"{r['tokens_seen']} | {r['max_kept']} | {r['answers']} ({r['answer_errors']} errors) | "
            f"{r['block_ms_start']:.2f} -> {r['block_ms_end']:.2f} | {r['block_time_ratio']:.3f} "
            f"({ok(r['block_time_ratio'])}) | {r['block_cpu_ms_start']:.2f} -> {r['block_cpu_ms_end']:.2f} | "
            f"{r['block_cpu_ratio']:.3f} ({ok(r['block_cpu_ratio'])}) | {r['rss_mb_start']:.0f} -> "
            f"{r['rss_mb_end']:.0f} | {r['rss_ratio']:.3f} ({ok(r['rss_ratio'])}) |")
    return "\n".join(lines)
