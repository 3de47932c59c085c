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

err = Console(stderr=True)


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
    p.add_argument("--memory", type=int, default=None, help="streaming memory size in tokens (default 4x budget)")
    p.add_argument("--method", default="ours", help="token selection method (ours or a baseline)")
    p.add_argument("--fps", type=float, default=1.0, help="frames per second sampled from the video")
    p.add_argument("--max-frames", type=int, default=None, help="at most this many frames, spread uniformly")
    p.add_argument("--decoder-prune", action="store_true", help="also prune inside the decoder (SparseVLM-style)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)


# ---------------------------------------------------------------- ask  (issue 4)
def add_ask(sub) -> None:
    p = sub.add_parser("ask", help="answer a question about a video file")
    p.add_argument("video")
    p.add_argument("question")
    add_model_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=cmd_ask)


def cmd_ask(args) -> int:
    raise UsageError("ask: not implemented yet")


# ---------------------------------------------------------------- tiny-model  (issue 4)
def add_tiny_model(sub) -> None:
    p = sub.add_parser("tiny-model", help="write a tiny random-weight model (for tests and offline smoke runs)")
    p.add_argument("family")
    p.add_argument("out_dir")
    p.set_defaults(func=cmd_tiny_model)


def cmd_tiny_model(args) -> int:
    raise UsageError("tiny-model: not implemented yet")


# ---------------------------------------------------------------- live  (issue 6)
def add_live(sub) -> None:
    p = sub.add_parser("live", help="watch a webcam or stream; answer questions while it watches")
    p.add_argument("--source", required=True, help="webcam index, /dev/videoN, rtsp/udp/tcp/http URL, or a file")
    add_model_options(p)
    p.set_defaults(func=cmd_live)


def cmd_live(args) -> int:
    raise UsageError("live: not implemented yet")


# ---------------------------------------------------------------- bench  (issue 7)
def add_bench(sub) -> None:
    p = sub.add_parser("bench", help="measure methods and budgets side by side")
    p.add_argument("--suite", default="features")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    raise UsageError("bench: not implemented yet")


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
