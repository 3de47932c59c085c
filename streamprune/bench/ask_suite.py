"""Time to first token and peak memory vs video length, with pruning (streamprune) and without (every
visual token to the LLM).

    python -m streamprune.bench.ask_suite                      # tiny model + qwen2-vl-2b (random weights)
    python -m streamprune.bench.ask_suite --models tiny --minutes 1 10 60

Videos are synthesised at 1 fps (never decoded from a real file). The tiny model encodes every frame with
its own vision tower. A real-size random-weight model (C1's presets) cannot encode hours of frames on a CPU,
so its stream is made of synthetic LLM-space tokens (low-rank scenes, streamprune.bench.streams) with the
real payload layout, and its vision cost is measured on a few real frames and reported per block; the
selection, the question stage and the prefill are the real ones at every length. The no-pruning arm is
stopped (and says so) when its predicted prefill time exceeds --full-limit.

TTFT here = the time from the question to the first generated token (question stage + prefill); reading
the video before the question is reported separately (stream_s).
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..pipeline import AskConfig, PeakMemory, Pipeline, _FirstToken, rss_mb
from ..readers import Frame
from .report import write_outputs

QUESTION = "What does the man pick up from the table after the phone rings?"


@dataclass
class _Block:  # EncodedBlock-like
    tokens: torch.Tensor
    times: torch.Tensor
    payload: torch.Tensor


def synth_frames(seconds: float, *, fps: float = 1.0, size=(224, 224), scene_s: float = 75.0, seed: int = 0):
    """Frames of a synthetic video: a new background every `scene_s` seconds plus a moving box."""
    h, w = size
    rng = np.random.default_rng(seed)
    n = int(round(seconds * fps))
    bg = None
    for k in range(n):
        t = k / fps
        if k == 0 or int(t // scene_s) != int((t - 1 / fps) // scene_s):
            c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
            ramp = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
            bg = (c0 * (1 - ramp) + c1 * ramp).astype(np.uint8).repeat(h, 0)
        img = bg.copy()
        x = int((k * 7) % max(1, w - 32))
        img[h // 3: h // 3 + 32, x: x + 32] = 255
        yield Frame(time=t, index=k, image=img)


def qwen_payload(gh: int, gw: int, dt: float, n_frames: int = 2) -> torch.Tensor:
    """(gh*gw, 6) payload rows of one Qwen temporal patch: (dt, frames, i, j, rows, cols)."""
    m = torch.arange(gh * gw)
    return torch.stack([torch.full((gh * gw,), dt), torch.full((gh * gw,), float(n_frames)), (m // gw).float(),
                        (m % gw).float(), torch.full((gh * gw,), float(gh)), torch.full((gh * gw,), float(gw))], 1)


def synth_blocks(n_blocks: int, gh: int, gw: int, dim: int, *, fps: float = 1.0, seed: int = 0):
    """Synthetic LLM-space blocks (2 frames each) with the Qwen payload layout."""
    from .streams import synthetic_stream

    stream = synthetic_stream(n_blocks, gh * gw, dim, needles=min(10, n_blocks // 8), scene_len=max(1, int(37.5 * fps)),
                              seed=seed)  # a new scene every 75 s, like synth_frames
    pay = qwen_payload(gh, gw, 1.0 / fps)
    for b, (_, tok) in enumerate(stream):
        t0 = 2 * b / fps
        yield _Block(tok, torch.full((gh * gw,), t0 + 0.5 / fps, dtype=torch.float64), pay), [t0, t0 + 1 / fps]


def _adapter(name: str, tmp: Path):
    from ..models import build_random_model, load_model, write_tiny_model

    if name == "tiny":
        return load_model(str(write_tiny_model("qwen2_vl", tmp / "tiny")), device="cpu")
    return build_random_model(name, device="cpu", dtype=torch.float32)


def _grid(adapter, size) -> tuple[int, int]:
    h, w = adapter.frame_size(*size)
    f = adapter.patch * adapter.merge
    return h // f, w // f


def encode_cost(adapter, size, blocks: int = 2) -> float:
    """Seconds per block (2 frames) of the real vision tower on synthetic frames."""
    frames = list(synth_frames(2 * blocks + 2, size=size))
    imgs = np.stack([f.image for f in frames])
    with torch.inference_mode():
        adapter.encode(imgs[:2], [0.0, 1.0])  # warm-up
        t = time.perf_counter()
        for b in range(blocks):
            adapter.encode(imgs[2 + 2 * b: 4 + 2 * b], [2.0 + 2 * b, 3.0 + 2 * b])
    return (time.perf_counter() - t) / blocks


def _blocks_for(adapter, name, seconds, size, fps, real_frames: bool):
    """Iterator of (block, frame_times) for `seconds` of video: encoded frames, or synthetic tokens."""
    if real_frames:
        frames = synth_frames(seconds, fps=fps, size=size)
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


def pruned_arm(adapter, name, seconds, *, size, fps, budget, memory, real_frames) -> dict:
    gc.collect()
    pipe = Pipeline(adapter, AskConfig(budget=budget, memory=memory, max_new_tokens=1, thumbnails=0))
    pipe.warm()
    pipe.peak.reset()
    base = rss_mb()
    t = time.perf_counter()
    for enc, times in _blocks_for(adapter, name, seconds, size, fps, real_frames):
        pipe.push_encoded(enc, times)
    stream_s = time.perf_counter() - t
    a = pipe.ask(QUESTION, max_new_tokens=1)
    return dict(arm="pruned", tokens_seen=a.tokens_seen, tokens_kept=a.tokens_kept, tokens_to_llm=a.tokens_to_llm,
                ttft_s=a.timings["ttft"], question_s=a.timings["question"], prefill_s=a.timings["prefill"],
                select_s=a.timings["select"], stream_s=stream_s, peak_mb=a.peak_memory_mb,
                peak_over_start_mb=a.peak_memory_mb - base)


def full_arm(adapter, name, seconds, *, size, fps, real_frames) -> dict:
    """Every visual token to the LLM (no pruning): memory grows with the video."""
    from ..select import Memory

    gc.collect()
    peak = PeakMemory(getattr(adapter, "device", None))
    base = rss_mb()
    toks, times, pays = [], [], []
    t = time.perf_counter()
    for enc, _ in _blocks_for(adapter, name, seconds, size, fps, real_frames):
        toks.append(enc.tokens.float())
        times.append(enc.times)
        pays.append(enc.payload)
    stream_s = time.perf_counter() - t
    n = sum(len(x) for x in toks)
    mem = Memory(torch.cat(toks), torch.cat(times), torch.arange(n), torch.cat(pays))
    del toks, pays
    streamer = _FirstToken()
    t = time.perf_counter()
    with torch.inference_mode():
        adapter.generate(mem, QUESTION, max_new_tokens=1, streamer=streamer)
    ttft = (streamer.first or time.perf_counter()) - t
    return dict(arm="full", tokens_seen=n, tokens_kept=n, tokens_to_llm=n, ttft_s=ttft, prefill_s=ttft,
                stream_s=stream_s, peak_mb=peak.mb(), peak_over_start_mb=peak.mb() - base)


def run(args) -> dict:
    """Run the suite; returns {"rows": [...], "notes": [...], "config": {...}}."""
    from rich.console import Console

    err = Console(stderr=True, soft_wrap=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = (args.size, args.size)
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            t = time.perf_counter()
            try:
                adapter = _adapter(name, Path(tmp))
            except (RuntimeError, MemoryError, ValueError) as e:
                notes.append(f"{name}: not run ({str(e).splitlines()[0][:120]})")
                continue
            real_frames = name == "tiny"
            gh, gw = _grid(adapter, size)
            enc_s = encode_cost(adapter, size)
            err.print(f"{name}: built in {time.perf_counter() - t:.1f}s; {gh * gw} tokens per block; "
                      f"encode {enc_s:.3f}s/block", highlight=False)
            notes.append(f"{name}: hidden {adapter.hidden_size}, {gh * gw} tokens per 2-frame block "
                         f"({size[0]}px frames), vision encode {enc_s:.3f} s per block"
                         + ("" if real_frames else " (stream tokens synthetic; vision cost reported per block)"))
            last_full = None  # (tokens, seconds) of the last full-arm prefill
            for minutes in args.minutes:
                seconds = minutes * 60
                r = pruned_arm(adapter, name, seconds, size=size, fps=args.fps, budget=args.budget,
                               memory=args.memory, real_frames=real_frames)
                r.update(model=name, minutes=minutes, encode_s_per_block=enc_s)
                rows.append(r)
                err.print(f"  {minutes:>4} min pruned: ttft {r['ttft_s']:.3f}s peak {r['peak_mb']:.0f} MB", highlight=False)
                n_full = int(math.ceil(seconds * args.fps / 2)) * gh * gw
                if last_full is None:  # calibrate on the pruned prefill (prompt text included)
                    last_full = (r["tokens_to_llm"] + 30, r["prefill_s"])
                predicted = last_full[1] * (n_full / last_full[0]) ** 1.2
                skip = None
                if predicted > args.full_limit:
                    skip = (f"stopped at {minutes} min ({n_full} visual tokens): predicted prefill "
                            f"{predicted:.0f}s > limit {args.full_limit:.0f}s",
                            f"predicted prefill {predicted:.0f}s > {args.full_limit:.0f}s")
                elif n_full > args.full_max_tokens:
                    skip = (f"skipped at {minutes} min: {n_full} visual tokens > --full-max-tokens "
                            f"{args.full_max_tokens}", f"{n_full} tokens > {args.full_max_tokens}")
                if skip is not None:
                    notes.append(f"{name}: no-pruning arm {skip[0]}")
                    rows.append(dict(arm="full", model=name, minutes=minutes, tokens_to_llm=n_full, skipped=skip[1]))
                    continue
                f = full_arm(adapter, name, seconds, size=size, fps=args.fps, real_frames=real_frames)
                f.update(model=name, minutes=minutes, encode_s_per_block=enc_s)
                rows.append(f)
                last_full = (f["tokens_to_llm"], f["ttft_s"])
                err.print(f"  {minutes:>4} min full:   ttft {f['ttft_s']:.3f}s peak {f['peak_mb']:.0f} MB", highlight=False)
            if not any(r.get("arm") == "full" and "skipped" not in r and r["model"] == name for r in rows) \
                    and args.full_fallback > 0:
                sec = args.full_fallback
                f = full_arm(adapter, name, sec, size=size, fps=args.fps, real_frames=real_frames)
                f.update(model=name, minutes=round(sec / 60, 3), encode_s_per_block=enc_s)
                rows.append(f)
                notes.append(f"{name}: no-pruning arm measured on a reduced {sec:g} s clip instead")
                err.print(f"  {sec:>4} s full:   ttft {f['ttft_s']:.3f}s peak {f['peak_mb']:.0f} MB", highlight=False)
            del adapter
            gc.collect()
    return {"rows": rows, "notes": notes,
            "config": dict(budget=args.budget, memory=args.memory, fps=args.fps, size=args.size,
                           threads=torch.get_num_threads(), question=QUESTION)}


def to_markdown(res: dict) -> str:
    lines = ["| model | video | arm | visual tokens seen | to the LLM | TTFT (s) | peak RSS (MB) | "
             "peak - start (MB) | stream (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        if "skipped" in r:
            lines.append(f"| {r['model']} | {r['minutes']} min | full | | {r['tokens_to_llm']} | stopped: "
                         f"{r['skipped']} | | | |")
            continue
        lines.append(f"| {r['model']} | {r['minutes']} min | {r['arm']} | {r['tokens_seen']} | {r['tokens_to_llm']} | "
                     f"{r['ttft_s']:.3f} | {r['peak_mb']:.0f} | {r['peak_over_start_mb']:.0f} | {r['stream_s']:.1f} |")
    return "\n".join(lines + [""] + [f"- {n}" for n in res["notes"]])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m streamprune.bench.ask_suite", description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["tiny", "qwen2-vl-2b"], help="tiny and/or presets")
    p.add_argument("--minutes", nargs="+", type=float, default=[1, 10, 60])
    p.add_argument("--fps", type=float, default=1.0)
    p.add_argument("--size", type=int, default=224, help="synthetic frame side (pixels)")
    p.add_argument("--budget", type=int, default=256)
    p.add_argument("--memory", type=int, default=1024)
    p.add_argument("--full-limit", type=float, default=120.0, help="stop the no-pruning arm past this prefill (s)")
    p.add_argument("--full-max-tokens", type=int, default=60000, help="never build a full prompt larger than this")
    p.add_argument("--full-fallback", type=float, default=16.0,
                   help="when the no-pruning arm fits no requested length, measure it on a clip this long (s)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--json", type=Path, default=None, help="write results as JSON here")
    p.add_argument("--markdown", type=Path, default=None, help="write the markdown table here")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    write_outputs(run(args), args, to_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
