"""Time to first token and peak memory vs video length, with pruning (streamprune) and without (every
visual token to the LLM).

    streamprune bench --suite ask --quick                              # tiny model, short videos
    streamprune bench --suite ask --model random:qwen2-vl-2b --opt minutes=1,10,60 --device cuda

--model: tiny (default), random:PRESET (a real config with random weights, built on --device in --dtype), or
a checkpoint. Videos are synthesised at 1 fps (bench.clips.scene_frames, never decoded from a file). The
tiny model encodes every frame with its own vision tower. A real-size model cannot encode hours of frames on
a CPU, so its stream is made of synthetic LLM-space tokens (low-rank scenes, streamprune.bench.streams) with
the real payload layout, and its vision cost is measured on a few real frames and reported per block; the
selection, the question stage and the prefill are the real ones at every length (`real_frames` overrides).
The no-pruning arm is skipped (and says so) when its predicted prefill time exceeds `full_limit`.

TTFT here = the time from the question to the first generated token (question stage + prefill); reading
the video before the question is reported separately (stream_s).
"""

from __future__ import annotations

import gc
import math
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..memprobe import PeakMemory, rss_mb
from ..pipeline import AskConfig, FirstTokenTimer, Pipeline
from .clips import scene_frames
from .protocol import Option, SuiteOptions, boolean, floats, load_adapter, model_kind, positive
from .runner import Unit

QUESTION = "What does the man pick up from the table after the phone rings?"
TITLE = "ask: time to first token and peak memory vs video length, pruned vs every token"
OPTIONS = (
    Option("minutes", floats, [1.0, 10.0, 60.0], "comma-separated video lengths (minutes)", quick_default=[0.25, 1.0]),
    Option("fps", positive(float), 1.0, "frames per second of the synthetic video"),
    Option("size", positive(int), 224, "synthetic frame side (pixels)", quick_default=112),
    Option("budget", positive(int), 256, "visual tokens to the LLM (pruned arm)", quick_default=32),
    Option("memory", positive(int), 1024, "streaming memory (tokens)", quick_default=128),
    Option("full_limit", positive(float), 120.0, "skip the no-pruning arm past this predicted prefill (s)"),
    Option("full_max_tokens", positive(int), 60000, "never build a full prompt larger than this"),
    Option("full_fallback", float, 16.0, "also measure the no-pruning arm on a clip this long (s; 0: no)"),
    Option("real_frames", boolean, None, "encode real frames (default: only for a tiny model)"),
)


@dataclass
class _Block:  # EncodedBlock-like
    tokens: torch.Tensor
    times: torch.Tensor
    payload: torch.Tensor


def qwen_payload(gh: int, gw: int, dt: float, n_frames: int = 2) -> torch.Tensor:
    """(gh*gw, 6) payload rows of one Qwen temporal patch: (dt, frames, i, j, rows, cols)."""
    m = torch.arange(gh * gw)
    return torch.stack([torch.full((gh * gw,), dt), torch.full((gh * gw,), float(n_frames)), (m // gw).float(),
                        (m % gw).float(), torch.full((gh * gw,), float(gh)), torch.full((gh * gw,), float(gw))], 1)


def synth_blocks(n_blocks: int, gh: int, gw: int, dim: int, *, fps: float = 1.0, seed: int = 0):
    """Synthetic LLM-space blocks (2 frames each) with the Qwen payload layout."""
    from .streams import synthetic_stream

    stream = synthetic_stream(n_blocks, gh * gw, dim, needles=min(10, n_blocks // 8), scene_len=max(1, int(37.5 * fps)),
                              seed=seed)  # a new scene every 75 s, like clips.scene_frames
    pay = qwen_payload(gh, gw, 1.0 / fps)
    for b, (_, tok) in enumerate(stream):
        t0 = 2 * b / fps
        yield _Block(tok, torch.full((gh * gw,), t0 + 0.5 / fps, dtype=torch.float64), pay), [t0, t0 + 1 / fps]


_ADAPTER: dict = {}


def get_adapter(model, device, dtype):
    """The adapter --model names, built once per process (the last one only: real-size models are large)."""
    key = (model, device, dtype)
    if key not in _ADAPTER:
        _ADAPTER.clear()
        gc.collect()
        _ADAPTER[key] = load_adapter(model, tempfile.mkdtemp(prefix="streamprune-ask-"), device=device or "cpu",
                                     dtype=dtype)
    return _ADAPTER[key]


def _grid(adapter, size) -> tuple[int, int]:
    h, w = adapter.frame_size(*size)
    f = adapter.patch * adapter.merge
    return h // f, w // f


def encode_cost(adapter, size, blocks: int = 2) -> float:
    """Seconds per block (2 frames) of the real vision tower on synthetic frames."""
    frames = list(scene_frames(2 * blocks + 2, size=size))
    imgs = np.stack([f.image for f in frames])
    with torch.inference_mode():
        adapter.encode(imgs[:2], [0.0, 1.0])  # warm-up
        t = time.perf_counter()
        for b in range(blocks):
            adapter.encode(imgs[2 + 2 * b: 4 + 2 * b], [2.0 + 2 * b, 3.0 + 2 * b])
    return (time.perf_counter() - t) / blocks


def _blocks_for(adapter, seconds, size, fps, real_frames: bool):
    """Iterator of (block, frame_times) for `seconds` of video: encoded frames, or synthetic tokens."""
    if real_frames:
        frames = scene_frames(seconds, fps=fps, size=size)
        while True:
            pair = [f for _, f in zip(range(2), frames)]
            if not pair:
                return
            times = [f.time for f in pair]
            if len(pair) == 1:
                pair, times = pair * 2, times + [times[0] + 1 / fps]
            with torch.inference_mode():
                enc = adapter.encode(np.stack([f.image for f in pair]), times)
            yield enc, times[: len(set(f.index for f in pair))]
    else:
        gh, gw = _grid(adapter, size)
        yield from synth_blocks(int(math.ceil(seconds * fps / 2)), gh, gw, adapter.hidden_size, fps=fps)


def pruned_arm(adapter, seconds, *, size, fps, budget, memory, real_frames) -> dict:
    gc.collect()
    pipe = Pipeline(adapter, AskConfig(budget=budget, memory=memory, max_new_tokens=1, thumbnails=0))
    pipe.warm()
    pipe.peak.reset()
    base = rss_mb()
    t = time.perf_counter()
    for enc, times in _blocks_for(adapter, seconds, size, fps, real_frames):
        pipe.push_encoded(enc, times)
    stream_s = time.perf_counter() - t
    a = pipe.ask(QUESTION, max_new_tokens=1)
    return dict(arm="pruned", tokens_seen=a.tokens_seen, tokens_kept=a.tokens_kept, tokens_to_llm=a.tokens_to_llm,
                ttft_s=a.timings["ttft"], question_s=a.timings["question"], prefill_s=a.timings["prefill"],
                select_s=a.timings["select"], stream_s=stream_s, peak_mb=a.peak_memory_mb,
                peak_over_start_mb=a.peak_memory_mb - base)


def full_arm(adapter, seconds, *, size, fps, real_frames) -> dict:
    """Every visual token to the LLM (no pruning): memory grows with the video."""
    from ..select import Memory

    gc.collect()
    peak = PeakMemory(getattr(adapter, "device", None))
    base = rss_mb()
    toks, times, pays = [], [], []
    t = time.perf_counter()
    for enc, _ in _blocks_for(adapter, seconds, size, fps, real_frames):
        toks.append(enc.tokens.float())
        times.append(enc.times)
        pays.append(enc.payload)
    stream_s = time.perf_counter() - t
    n = sum(len(x) for x in toks)
    mem = Memory(torch.cat(toks), torch.cat(times), torch.arange(n), torch.cat(pays))
    del toks, pays
    streamer = FirstTokenTimer()
    t = time.perf_counter()
    with torch.inference_mode():
        adapter.generate(mem, QUESTION, max_new_tokens=1, streamer=streamer)
    ttft = (streamer.first or time.perf_counter()) - t
    return dict(arm="full", tokens_seen=n, tokens_kept=n, tokens_to_llm=n, ttft_s=ttft, prefill_s=ttft,
                stream_s=stream_s, peak_mb=peak.mb(), peak_over_start_mb=peak.mb() - base)


def plan(opts: SuiteOptions) -> list[Unit]:
    x = opts.extra
    model_kind(opts.model)  # a bad --model is an error before anything runs
    common = {k: x[k] for k in ("fps", "size", "budget", "memory", "full_limit", "full_max_tokens", "real_frames")}
    common.update(model=opts.model or "tiny", device=opts.device or "cpu", dtype=opts.dtype)
    units = [Unit(f"ask/{common['model']}/{m:g}min", {**common, "minutes": float(m)}) for m in x["minutes"]]
    if x["full_fallback"] > 0 and x["full_fallback"] < 60 * min(x["minutes"]):
        units.append(Unit(f"ask/{common['model']}/full-{x['full_fallback']:g}s",
                          {**common, "minutes": x["full_fallback"] / 60, "only_full": True}))
    return units


def run_unit(unit: Unit, opts: SuiteOptions) -> list[dict]:
    """The pruned arm at this length, then the no-pruning arm unless its predicted prefill (calibrated on the
    pruned prefill, cost ~ tokens^1.2) passes full_limit or its prompt passes full_max_tokens."""
    p = unit.params
    model = None if p["model"] == "tiny" else p["model"]
    adapter = get_adapter(model, p["device"], p["dtype"])
    real = p["real_frames"] if p["real_frames"] is not None else model_kind(model)[0] == "tiny"
    size = (p["size"], p["size"])
    gh, gw = _grid(adapter, size)
    enc_s = encode_cost(adapter, size)
    seconds = p["minutes"] * 60
    base = dict(model=p["model"], minutes=round(p["minutes"], 4), tokens_per_block=gh * gw,
                encode_s_per_block=enc_s, real_frames=bool(real), device=str(adapter.device),
                dtype=str(adapter.dtype).replace("torch.", ""), threads=torch.get_num_threads())
    rows = []
    n_full = int(math.ceil(seconds * p["fps"] / 2)) * gh * gw
    if not p.get("only_full"):
        r = pruned_arm(adapter, seconds, size=size, fps=p["fps"], budget=p["budget"], memory=p["memory"],
                       real_frames=real)
        rows.append({**base, **r})
        predicted = r["prefill_s"] * (n_full / (r["tokens_to_llm"] + 30)) ** 1.2
        skip = None
        if predicted > p["full_limit"]:
            skip = f"predicted prefill {predicted:.0f}s > full_limit {p['full_limit']:.0f}s"
        elif n_full > p["full_max_tokens"]:
            skip = f"{n_full} tokens > full_max_tokens {p['full_max_tokens']}"
        if skip is not None:
            return rows + [{**base, "arm": "full", "tokens_to_llm": n_full, "skipped": skip}]
    f = full_arm(adapter, seconds, size=size, fps=p["fps"], real_frames=real)
    return rows + [{**base, **f}]


def report(rows: list[dict], opts: SuiteOptions) -> str:
    lines = [f"## {TITLE}", "",
             "| model | video | arm | visual tokens seen | to the LLM | TTFT (s) | peak RSS (MB) | "
             "peak - start (MB) | stream (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        video = f"{r['minutes']:g} min" if r["minutes"] >= 1 else f"{r['minutes'] * 60:g} s"
        if "skipped" in r:
            lines.append(f"| {r['model']} | {video} | full | | {r['tokens_to_llm']} | skipped: {r['skipped']} | | | |")
            continue
        lines.append(f"| {r['model']} | {video} | {r['arm']} | {r['tokens_seen']} | {r['tokens_to_llm']} | "
                     f"{r['ttft_s']:.3f} | {r['peak_mb']:.0f} | {r['peak_over_start_mb']:.0f} | {r['stream_s']:.1f} |")
    first = {r["model"]: r for r in reversed(rows)}  # one note per model (its first row)
    notes = [f"{m} on {r['device']} ({r['dtype']}, {r['threads']} threads): {r['tokens_per_block']} tokens per "
             f"2-frame block, vision encode {r['encode_s_per_block']:.3f} s per block"
             + ("" if r["real_frames"] else " (stream tokens synthetic; vision cost reported per block)")
             for m, r in first.items()]
    return "\n".join(lines + [""] + [f"- {n}" for n in notes] + ["- wall time; other work may share the cores"])
