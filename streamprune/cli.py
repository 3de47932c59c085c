"""`streamprune ask | live | bench | tiny-model`.

Results go to stdout (`--json` for machines), progress and messages to stderr. Bad input is one line on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from rich.console import Console
from rich.markup import escape

err = Console(stderr=True, soft_wrap=True)  # soft_wrap: one-line errors stay one line in pipes


class UsageError(ValueError):
    """Bad command-line input: printed as one line, exit code 2."""


# ---------------------------------------------------------------- shared options
def add_model_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `ask`, `live` and `bench`: model, budgets, method."""
    p.add_argument("--model", default="Qwen/Qwen2-VL-2B-Instruct", help="hub id or local folder")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="bfloat16, float16, float32 (default: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--attn", default=None, help="attention implementation (sdpa, eager, flash_attention_2)")
    p.add_argument("--budget", type=int, default=1024, help="visual tokens given to the LLM")
    p.add_argument("--memory", type=int, default=None, help="streaming memory size in tokens (default max(4x budget, 512))")
    p.add_argument("--method", default="ours", help="token selection method: ours, uniform, random, l2, divprune, dpp, dedup, offline")
    p.add_argument("--alpha", type=float, default=None, help="question relevance exponent (default 0.3 Qwen, 0.75 LLaVA)")
    p.add_argument("--fps", type=float, default=1.0, help="frames per second sampled from the video")
    p.add_argument("--max-frames", type=int, default=None, help="at most this many frames, spread uniformly")
    p.add_argument("--decoder-prune", action="store_true", help="also prune inside the decoder (SparseVLM-style)")
    p.add_argument("--fast-decode", action="store_true",
                   help="decode frames more than 2x the model's input size smaller (faster on 4K/8K; pixels then "
                        "differ from the stock processor's by a few levels)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)


# ---------------------------------------------------------------- ask  (issue 4)

def add_ask(sub) -> None:
    p = sub.add_parser("ask", help="answer a question about a video file")
    p.add_argument("video")
    p.add_argument("question")
    add_model_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--save-kept", metavar="PNG", default=None, help="write a contact sheet of the kept tokens")
    p.set_defaults(func=cmd_ask)


def _config_kw(args) -> dict:
    """AskConfig fields from the shared model options."""
    return dict(budget=args.budget, memory=args.memory, method=args.method, fps=args.fps, max_frames=args.max_frames,
                alpha=args.alpha, decoder_prune=args.decoder_prune, max_new_tokens=args.max_new_tokens, seed=args.seed,
                decode_headroom=2.0 if args.fast_decode else None)


def _load_adapter(args):
    from .models import load_model

    if not err.is_terminal:  # weight-loading bars only on a terminal
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    adapter = load_model(args.model, device=args.device, dtype=args.dtype, attn_implementation=args.attn)
    if getattr(adapter, "is_tiny", False):
        err.print("[yellow]warning:[/yellow] tiny random-weight model: its answers are meaningless", highlight=False)
    return adapter


def _progress_bar():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=True, disable=not err.is_terminal)


def cmd_ask(args) -> int:
    import json
    import os

    from .pipeline import AskConfig, Pipeline, run_video

    cfg = AskConfig(**_config_kw(args))  # bad budget / method / fps: ValueError before any loading
    if not os.path.isfile(args.video):
        raise UsageError(f"video not found: {args.video}")
    if args.save_kept is not None:
        d = os.path.dirname(os.path.abspath(args.save_kept))
        if not args.save_kept.lower().endswith(".png") or not os.path.isdir(d):
            raise UsageError(f"--save-kept needs a .png path in an existing folder, got {args.save_kept}")
    from .readers import open_video

    with open_video(args.video, fps=cfg.fps, max_frames=cfg.max_frames):  # corrupt file: error before the model loads
        pass
    adapter = _load_adapter(args)
    with _progress_bar() as bar:
        task = bar.add_task("decode + encode + select", total=None)

        def progress(stage, done, total):
            bar.update(task, completed=done, total=total)

        pipe = Pipeline(adapter, cfg)
        pipe.warm()
        run_video(pipe, args.video, progress=progress)
        bar.update(task, description="question + generate")
        answer = pipe.ask(args.question)
    if args.save_kept is not None:
        pipe.save_kept(args.save_kept)
    if args.json:
        print(json.dumps(answer.to_dict()))
    else:
        print(answer.text)
        tm = answer.timings
        err.print(f"[dim]{answer.frames} frames, {answer.tokens_seen} tokens seen, {answer.tokens_kept} in memory, "
                  f"{answer.tokens_to_llm} to the LLM; time to first token {tm['ttft']:.2f} s; "
                  f"peak memory {answer.peak_memory_mb:.0f} MB[/dim]", highlight=False)
    return 0


# ---------------------------------------------------------------- tiny-model  (issue 4)
def add_tiny_model(sub) -> None:
    p = sub.add_parser("tiny-model", help="write a tiny random-weight model (for tests and offline smoke runs)")
    p.add_argument("family")
    p.add_argument("out_dir")
    p.add_argument("--layout", choices=["video", "preprocessor", "nested"], default="video",
                   help="how the preprocessing settings are stored: video_preprocessor_config.json + "
                        "preprocessor_config.json (default), only preprocessor_config.json, or one nested "
                        "processor_config.json (transformers 5)")
    p.add_argument("--preprocessing", choices=["small", "real"], default="small",
                   help="small Qwen frames (default, fast) or the real checkpoints' pixel bounds")
    p.set_defaults(func=cmd_tiny_model)


def cmd_tiny_model(args) -> int:
    from .models import write_tiny_model

    path = write_tiny_model(args.family, args.out_dir, layout=args.layout, preprocessing=args.preprocessing)
    print(path)
    return 0


# ---------------------------------------------------------------- live  (issue 6)
def add_live(sub) -> None:
    p = sub.add_parser("live", help="watch a webcam or stream; answer questions while it watches")
    p.add_argument("--source", required=True, help="webcam index, /dev/videoN, rtsp/udp/tcp/http URL, or a file")
    add_model_options(p)
    p.add_argument("--realtime", action="store_true", help="replay a file at its real speed (drops frames when behind)")
    p.add_argument("--questions", metavar="FILE", default=None,
                   help="scripted questions, lines SECONDS<TAB>question; answers as JSON lines on stdout")
    p.add_argument("--json", action="store_true", help="answers typed at the prompt as JSON lines too")
    p.add_argument("--retry-for", type=float, default=30.0, help="seconds to keep reconnecting a lost source")
    p.set_defaults(func=cmd_live)


def _status_text(s) -> str:
    lat = "-" if s.last_latency is None else f"{s.last_latency:.2f}s"
    # fits 80 columns: stream time, source / processed fps, drops, tokens seen -> kept, RSS, last answer latency
    return (f"t={s.stream_time:.1f}s src {s.source_fps:.1f}fps proc {s.processed_fps:.1f}fps drop {s.dropped} "
            f"tok {s.tokens_seen}->{s.tokens_kept} {s.memory_mb:.0f}MB ans {lat}")


def cmd_live(args) -> int:
    import json
    import os
    import time

    from rich.live import Live
    from rich.text import Text

    from .live import LiveSession, parse_questions
    from .pipeline import AskConfig

    cfg = AskConfig(**_config_kw(args))
    questions = None
    if args.questions is not None:
        if not os.path.isfile(args.questions):
            raise UsageError(f"questions file not found: {args.questions}")
        with open(args.questions, encoding="utf-8") as f:
            questions = parse_questions(f.read())
    if args.retry_for < 0:
        raise UsageError(f"--retry-for must be >= 0, got {args.retry_for}")
    from .readers import is_live_source

    if not is_live_source(args.source) and not os.path.isfile(args.source):
        raise UsageError(f"source not found: {args.source}")
    adapter = _load_adapter(args)
    as_json = args.json or questions is not None

    def on_answer(a: dict) -> None:
        if as_json:
            print(json.dumps(a), flush=True)
        elif "error" in a:
            err.print(f"[red]{escape(a['error'])}[/red]", highlight=False)
        else:
            print(f"[{a['span'][0]:.1f}-{a['span'][1]:.1f}s] {a['answer']}", flush=True)

    session = LiveSession(adapter, cfg, args.source, realtime=args.realtime, questions=questions,
                          on_answer=on_answer, retry_for=args.retry_for)
    interactive = questions is None
    if interactive and err.is_terminal:
        err.print("watching; type a question and press Enter (Ctrl-C to stop)", highlight=False)
    last = [0.0]
    with Live(Text(""), console=err, refresh_per_second=4, transient=True, redirect_stdout=False,
              redirect_stderr=False) as live:
        def status(s):
            now = time.monotonic()
            if now - last[0] >= 0.25:
                last[0] = now
                live.update(Text(_status_text(s)))

        try:
            stats = session.run(read_stdin=interactive, status=status if err.is_terminal else None)
        except KeyboardInterrupt:
            session.stop()
            stats = session._refresh()
    ended = "error: " + str(session.error).splitlines()[0] if session.error else "stream ended"
    err.print(f"{ended}: watched {stats.stream_time:.1f} s, {stats.processed} frames processed, {stats.dropped} dropped, "
              f"{stats.tokens_seen} tokens seen, {stats.tokens_kept} kept, {stats.answers} answers", highlight=False)
    return 0


# ---------------------------------------------------------------- bench  (issue 7)
def add_bench(sub) -> None:
    p = sub.add_parser("bench", help="measure methods and budgets side by side",
                       description="Run a benchmark suite (resumable, shardable), or `bench merge OUT` to merge shards.")
    p.add_argument("action", nargs="?", choices=["run", "merge"], default="run",
                   help="run a suite (default) or merge the results under a folder")
    p.add_argument("merge_dir", nargs="?", metavar="OUT", help="folder to merge (with `merge`)")
    p.add_argument("--suite", default="features",
                   help="features | qa | scaling | select | readers | decoder | ask | live-soak")
    p.add_argument("--quick", action="store_true", help="small settings (minutes on a laptop CPU)")
    p.add_argument("--out", default=None, help="results folder: JSON lines, CSV, plots (default out/bench)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="run slice I of N (default: RANK/WORLD_SIZE from torchrun/accelerate, else all)")
    p.add_argument("--max-units", type=int, default=None, help="stop after this many units (resume later)")
    p.add_argument("--merge-wait", type=float, default=0.0,
                   help="rank 0 waits up to this many seconds for the other shards before merging")
    p.add_argument("--plots-dir", default=None, help="write PNG plots here (default: --out)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (features default: 1)")
    p.add_argument("--suite-args", default=None,
                   help="select|readers|decoder|ask|live-soak: extra flags for that suite, e.g. '--minutes 1'")
    p.add_argument("--methods", default=None, help="comma-separated method variants (default: all)")
    p.add_argument("--budgets", default=None, help="comma-separated token budgets")
    p.add_argument("--streams", default=None, help="features: comma-separated stream names")
    p.add_argument("--presets", default=None, help="scaling: comma-separated model presets")
    p.add_argument("--frames", default=None, help="scaling: comma-separated frame counts")
    p.add_argument("--data", default=None, help="qa: folder holding the benchmark datasets")
    p.add_argument("--datasets", default=None, help="qa: comma-separated datasets (videomme, mvbench, mlvu, "
                                                    "egoschema, longvideobench)")
    p.add_argument("--limit", type=int, default=None, help="qa: at most this many questions per dataset")
    add_model_options(p)
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    from streamprune.bench import suites

    if args.action == "merge":
        if not args.merge_dir:
            raise UsageError("bench merge needs the results folder: streamprune bench merge OUT")
        return suites.merge_cmd(args.merge_dir, plots_dir=args.plots_dir)
    if args.merge_dir:
        raise UsageError(f"unexpected argument {args.merge_dir!r} (did you mean `bench merge {args.merge_dir}`?)")
    return suites.run(args)


# ---------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamprune", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (add_ask, add_live, add_bench, add_tiny_model):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except (ValueError, FileNotFoundError, OSError) as e:  # one line, no traceback
        if args.verbose:
            err.print_exception()
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        err.print(f"[red]error:[/red] {escape(msg)}", highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
