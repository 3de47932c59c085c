"""`streamprune ask | live | bench | tiny-model`.

Results go to stdout (`--json` for machines), progress and messages to stderr. Bad input is one line on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import traceback

from rich.console import Console
from rich.markup import escape

err = Console(stderr=True, soft_wrap=True)  # soft_wrap: one-line errors stay one line in pipes


class UsageError(ValueError):
    """Bad command-line input: printed as one line, exit code 2."""


class ArgumentsError(UsageError):
    """argparse's complaint about the command line (one line instead of usage + message)."""

    def __init__(self, prog: str, detail: str):
        self.prog, self.detail = prog, detail
        super().__init__(f"{prog}: {detail} (see `{prog} --help`)")


class HelpFormatter(argparse.HelpFormatter):
    """Help that shows each option's default (unless its help already speaks of one) and fills `{methods}` and
    `{families}` from the library, imported only when help is shown (parsing stays torch-free)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "{methods}" in text:
            from .select import METHODS

            text = text.replace("{methods}", ", ".join(METHODS))
        if "{families}" in text:
            from .models.tiny import FAMILIES

            text = text.replace("{families}", ", ".join(FAMILIES))
        shown = action.option_strings or action.nargs in ("?", "*")
        if shown and action.default not in (None, False, argparse.SUPPRESS) and "default" not in text:
            text = f"{text} (default: %(default)s)".lstrip()
        return text


class RawDescriptionHelpFormatter(argparse.RawDescriptionHelpFormatter, HelpFormatter):
    """HelpFormatter that keeps the description's and epilog's line breaks."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors go through main's one error path (one `error:` line, exit 2)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise ArgumentsError(self.prog, message)


# a question that starts with '-' (e.g. "-5 degrees?") is taken for an option unless it comes after `--`
DASH_HINT = "a question starting with '-' goes after `--`: streamprune ask VIDEO [options] -- '-question'"


# ---------------------------------------------------------------- shared options
def add_model_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `ask`, `live` and `bench`: model, budgets, method."""
    p.add_argument("--model", default="Qwen/Qwen2-VL-2B-Instruct", help="hub id or local folder")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="bfloat16, float16, float32 (default: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--attn", default=None, help="attention implementation: sdpa (default), eager, flash_attention_2")
    p.add_argument("--budget", type=int, default=1024, help="visual tokens given to the LLM")
    p.add_argument("--memory", type=int, default=None, help="streaming memory size in tokens (default max(4x budget, 512))")
    p.add_argument("--method", default="subspace",
                   help="token selection method: {methods} (\"ours\" is an old name of subspace)")
    p.add_argument("--alpha", type=float, default=None, help="question relevance exponent (default 0.3 Qwen, 0.75 LLaVA)")
    p.add_argument("--fps", type=float, default=1.0, help="frames per second sampled from the video")
    p.add_argument("--max-frames", type=int, default=None, help="at most this many frames, spread uniformly")
    p.add_argument("--decoder-prune", action="store_true", help="also prune inside the decoder (SparseVLM-style)")
    p.add_argument("--fast-decode", action="store_true",
                   help="decode frames more than 2x the model's input size smaller (faster on 4K/8K; pixels then "
                        "differ from the stock processor's by a few levels)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--seed", type=int, default=0, help="seed of the selectors that draw random numbers")
    p.add_argument("--tune-malloc", action="store_true",
                   help="tune glibc's allocator to keep freed frame buffers (faster decoding of large frames; "
                        "process-wide; also STREAMPRUNE_MALLOPT=1)")
    _add_debug(p)


def _add_debug(p: argparse.ArgumentParser) -> None:
    """--debug after the subcommand too (SUPPRESS: it never resets a --debug given before it)."""
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the traceback of an error (and debug logging)")


# ---------------------------------------------------------------- ask  (issue 4)

def add_ask(sub) -> None:
    p = sub.add_parser("ask", help="answer a question about a video file",
                       epilog="Ctrl-C once stops reading and answers from the frames read so far (the JSON "
                              "says \"interrupted\": true and the span it covers); twice exits (130). Exit codes: "
                              "0 answered, 2 bad input (one `error:` line), 130 interrupted. A question starting "
                              "with '-' goes after `--`: streamprune ask VIDEO [options] -- '-question'.")
    p.add_argument("video")
    p.add_argument("question", help="the question (one starting with '-' goes after `--`)")
    add_model_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--save-kept", metavar="PNG", default=None, help="write a contact sheet of the kept tokens")
    p.set_defaults(func=cmd_ask)


def _method(name: str) -> str:
    """--method, with an old name ("ours") said once on stderr and mapped to its method."""
    from .select import METHOD_ALIASES

    if name in METHOD_ALIASES:
        err.print(f"[yellow]warning:[/yellow] --method {name} is now called {METHOD_ALIASES[name]}", highlight=False)
        return METHOD_ALIASES[name]
    return name


def _config_kw(args) -> dict:
    """AskConfig fields from the shared model options."""
    return dict(budget=args.budget, memory=args.memory, method=_method(args.method), fps=args.fps,
                max_frames=args.max_frames,
                alpha=args.alpha, decoder_prune=args.decoder_prune, max_new_tokens=args.max_new_tokens, seed=args.seed,
                decode_headroom=2.0 if args.fast_decode else None)


def _load_adapter(args):
    from .models import load_model

    _quiet_transformers()  # no weight-loading bars or transformers chatter on stderr
    adapter = load_model(args.model, device=args.device, dtype=args.dtype, attn_implementation=args.attn)
    if getattr(adapter, "is_tiny", False):
        err.print("[yellow]warning:[/yellow] tiny random-weight model: its answers are meaningless", highlight=False)
    return adapter


def _progress_bar():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=True, disable=not err.is_terminal)


def _check_model_options(args) -> None:
    """--device (parsed and available), --dtype, --attn: one-line errors before anything loads."""
    from .models import check_attn, parse_device, parse_dtype

    parse_device(args.device)
    parse_dtype(args.dtype)
    check_attn(args.attn)


@contextlib.contextmanager
def _first_interrupt_stops():
    """While reading: the first Ctrl-C sets the yielded Event (the reader stops and the answer comes from
    what was read), the next one raises KeyboardInterrupt as usual (exit 130)."""
    import signal
    import threading

    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def first(signum, frame):
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.stderr.write("interrupted: answering from the frames read so far (Ctrl-C again to quit)\n")
        sys.stderr.flush()

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous if not stop.is_set() else signal.default_int_handler)


def cmd_ask(args) -> int:
    import json

    from .checks import check_question, check_save_kept, check_video_path, probe_video
    from .config import AskConfig
    from .pipeline import Pipeline, run_video

    # everything cheap before the model loads: options, question, model options, the video opened and probed
    cfg = AskConfig(**_config_kw(args))
    check_question(args.question)
    _check_model_options(args)
    video = check_video_path(args.video)
    if args.save_kept is not None:
        check_save_kept(args.save_kept)
    probe_video(video, cfg)  # corrupt file: error before the model loads
    adapter = _load_adapter(args)
    with _progress_bar() as bar:
        task = bar.add_task("decode + encode + select", total=None)

        def progress(stage, done, total):
            bar.update(task, completed=done, total=total)

        pipe = Pipeline(adapter, cfg)  # a memory the device cannot hold: refused here
        pipe.warm()
        with _first_interrupt_stops() as stop:
            run_video(pipe, video, progress=progress, stop=stop)
        bar.update(task, description="question + generate")
        answer = pipe.ask(args.question)
    if args.save_kept is not None:
        pipe.save_kept(args.save_kept)
    if answer.interrupted:
        err.print(f"[yellow]warning:[/yellow] interrupted: answered from {answer.span[0]:.1f}-{answer.span[1]:.1f} s "
                  f"({answer.frames} frames) of the video", highlight=False)
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
    p.add_argument("family", help="model family: {families}")
    p.add_argument("out_dir", help="folder to write the model into")
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
LIVE_EXIT_CODES = """exit status:
  0    the source ended: end of the file, a stream closed by its sender, or Ctrl-D at the prompt
  2    bad input, a source that cannot be opened, or an error while watching (one `error:` line)
  3    the source was lost before its end (stalled or failed, and reconnecting gave up)
  130  interrupted (Ctrl-C), after the summary line"""


def add_live(sub) -> None:
    p = sub.add_parser("live", help="watch a webcam or stream; answer questions while it watches",
                       description="Watch a webcam, a stream, a named pipe or a file and answer questions while "
                                   "watching (typed at the prompt, or scripted with --questions). A summary line "
                                   "on stderr says how it ended.",
                       epilog=LIVE_EXIT_CODES, formatter_class=RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True,
                   help="webcam index, /dev/videoN, rtsp/udp/tcp/http URL, a named pipe, or a file")
    add_model_options(p)
    p.add_argument("--realtime", action="store_true", help="replay a file at its real speed (drops frames when behind)")
    p.add_argument("--questions", metavar="FILE", default=None,
                   help="scripted questions, lines SECONDS<TAB>question; answers as JSON lines on stdout")
    p.add_argument("--json", action="store_true", help="answers typed at the prompt as JSON lines too")
    p.add_argument("--retry-for", type=float, default=30.0, help="seconds to keep reconnecting a lost source")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to wait for a source to open (a named pipe: for a writer), and without data "
                        "before it counts as stalled")
    p.set_defaults(func=cmd_live)


def _quiet_transformers() -> None:
    """Keep transformers' own output off stderr while a command runs: no progress bars ("Loading weights"),
    only its errors (everything with -v/--debug). On a terminal, downloads keep their huggingface_hub bars."""
    import os

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # transformers' bars, and the hub's too
    if err.is_terminal and os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").upper() not in ("1", "ON", "YES", "TRUE"):
        import huggingface_hub.utils as hub_utils

        hub_utils.enable_progress_bars()  # a first run's multi-GB download says how far it is
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        hf_logging.set_verbosity_error()


class OneLineFormatter(logging.Formatter):
    """Log records as the CLI's own messages: `warning: ...` / `error: ...` on one line; debug and info
    records (-v) keep their level, logger name and any traceback."""

    def __init__(self):
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno < logging.WARNING:
            return super().format(record)
        lines = [ln.strip() for ln in record.getMessage().splitlines() if ln.strip()]
        return f"{'error' if record.levelno >= logging.ERROR else 'warning'}: {lines[0] if lines else record.name}"


class _StatusLine:
    """One status line on a terminal's stderr, redrawn in place. Everything else printed while it is shown
    (answers on stdout, warnings, log records from any thread) goes through `printing()`, which clears it
    first, so that no text is ever appended to it."""

    def __init__(self, console: Console):
        import threading

        self.console, self.enabled = console, console.is_terminal
        self.lock = threading.RLock()
        self.shown = False

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        import shutil

        width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)  # never wraps: \r redraws one line
        with self.lock:
            f = self.console.file
            f.write("\r" + text[:width] + "\x1b[K")
            f.flush()
            self.shown = True

    def clear(self) -> None:
        with self.lock:
            if self.shown:
                self.console.file.write("\r\x1b[K")
                self.console.file.flush()
                self.shown = False

    @contextlib.contextmanager
    def printing(self):
        with self.lock:
            self.clear()
            sys.stdout.flush()
            yield

    @contextlib.contextmanager
    def logging_through(self):
        """Log records (any thread) clear the status line first and come out as `warning: ...` lines;
        Python warnings (warnings.warn) too."""
        import warnings

        root = logging.getLogger()
        added = None
        if not root.handlers:  # called outside main(): warnings would go to logging's last resort
            added = logging.StreamHandler(sys.stderr)
            root.addHandler(added)
        saved = [(h, h.formatter) for h in root.handlers]
        fmt = OneLineFormatter()
        for h, _ in saved:
            h.setFormatter(fmt)

            def emit(record, _orig=h.emit):
                with self.printing():
                    _orig(record)

            h.emit = emit  # instance attribute: Handler.handle -> self.emit

        def showwarning(message, category, filename, lineno, file=None, line=None):
            logging.getLogger("py.warnings").warning("%s: %s", category.__name__, message)

        old_show = warnings.showwarning
        warnings.showwarning = showwarning
        try:
            yield
        finally:
            warnings.showwarning = old_show
            for h, f in saved:
                h.__dict__.pop("emit", None)
                h.setFormatter(f)
            if added is not None:
                root.removeHandler(added)


def _status_text(s) -> str:
    lat = "-" if s.last_latency is None else f"{s.last_latency:.2f}s"
    # fits 80 columns: stream time, source / processed fps, drops, tokens seen -> kept, RSS, last answer latency
    return (f"t={s.stream_time:.1f}s src {s.source_fps:.1f}fps proc {s.processed_fps:.1f}fps drop {s.dropped} "
            f"tok {s.tokens_seen}->{s.tokens_kept} {s.memory_mb:.0f}MB ans {lat}")


def _live_summary(head: str, s) -> str:
    return (f"{head}: watched {s.stream_time:.1f} s, {s.processed} frames processed, {s.dropped} dropped, "
            f"{s.tokens_seen} tokens seen, {s.tokens_kept} kept, {s.answers} answers")


def _check_live_source(source, cfg) -> None:
    """The source checked before the model loads: a webcam that exists, a file that opens and probes."""
    import os

    from .checks import check_video_path, probe_video
    from .readers import is_live_source
    from .readers.live import check_live_source, is_fifo

    if not isinstance(source, str) or not source.strip():
        raise UsageError("--source is empty")
    if is_live_source(source) or is_fifo(source):
        check_live_source(source)  # no webcam at /dev/video3: said now, not after the model loads
        return
    path = source[len("file://"):] if source.startswith("file://") else source
    if not os.path.exists(path):
        raise UsageError(f"source not found: {source}")
    probe_video(check_video_path(path), cfg)  # a folder, an empty or corrupt file: said now


def cmd_live(args) -> int:
    import os

    from .config import AskConfig
    from .live import parse_questions

    # everything cheap before the model loads: options, questions, the source checked (a file probed)
    cfg = AskConfig(**_config_kw(args))
    questions = None
    if args.questions is not None:
        if not os.path.isfile(args.questions):
            raise UsageError(f"questions file not found: {args.questions}")
        with open(args.questions, encoding="utf-8") as f:
            questions = parse_questions(f.read())
    if not args.retry_for >= 0 or args.retry_for == float("inf"):
        raise UsageError(f"--retry-for must be a number of seconds >= 0, got {args.retry_for}")
    if not 0 < args.timeout < float("inf"):
        raise UsageError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    _check_model_options(args)
    _check_live_source(args.source, cfg)
    line = _StatusLine(err)
    with line.logging_through():  # from here on warnings are `warning: ...` lines that clear the status line
        return _watch(args, cfg, questions, line)


def _watch(args, cfg, questions, line: _StatusLine) -> int:
    """cmd_live once the input is checked: load the model, watch, print the summary; the exit code."""
    import json
    import time

    from .live import LiveSession

    _quiet_transformers()
    adapter = _load_adapter(args)
    as_json = args.json or questions is not None

    def on_answer(a: dict) -> None:
        with line.printing():
            if as_json:
                print(json.dumps(a), flush=True)
            elif "error" in a:
                err.print(f"warning: cannot answer {a['question']!r}: {a['error']}", markup=False, highlight=False)
            else:
                print(f"[{a['span'][0]:.1f}-{a['span'][1]:.1f}s] {a['answer']}", flush=True)

    session = LiveSession(adapter, cfg, args.source, realtime=args.realtime, questions=questions,
                          on_answer=on_answer, retry_for=args.retry_for, timeout=args.timeout)
    interactive = questions is None
    if interactive and err.is_terminal:
        err.print("watching; type a question and press Enter (Ctrl-D to finish, Ctrl-C to stop)", highlight=False)
    last = [0.0]

    def status(s):
        now = time.monotonic()
        if now - last[0] >= 0.25:
            last[0] = now
            line.show(_status_text(s))

    interrupted = False
    try:
        stats = session.run(read_stdin=interactive, status=status if line.enabled else None)
    except KeyboardInterrupt:  # before the worker started, or again while shutting down
        interrupted = True
        try:
            session.stop(wait=1.0)
        except KeyboardInterrupt:
            pass
        stats = session.refresh()
    except Exception:
        line.clear()
        if session.opened and not (session.error is not None and session.stats.processed == 0):
            # an error while watching: the summary of what was watched, then main's one `error:` line
            err.print(_live_summary("stopped by an error", session.refresh()), markup=False, highlight=False)
        raise
    finally:
        line.clear()
    reason = stats.end_reason or "stopped"
    if interrupted or stats.interrupted:
        head, code = "interrupted", 130
    elif stats.lost:
        head, code = f"error: source lost before its end ({reason})", 3
    else:
        head, code = reason.split(";")[0], 0  # "stream ended; gave up after retrying" -> "stream ended"
    err.print(_live_summary(head, stats), markup=False, highlight=False)
    return code


# ---------------------------------------------------------------- bench  (issue 7)
def add_bench(sub) -> None:
    p = sub.add_parser("bench", help="measure methods and budgets side by side",
                       description="Run a benchmark suite (resumable, shardable), or `bench merge OUT` to merge "
                                   "shards. Every suite takes the same shared options; its own options go in "
                                   "`--opt KEY=VALUE` (or the named shortcuts below).")
    p.add_argument("action", nargs="?", choices=["run", "merge"], default="run",
                   help="run a suite (default) or merge the results under a folder")
    p.add_argument("merge_dir", nargs="?", metavar="OUT", help="folder to merge (with `merge`)")
    p.add_argument("--suite", default="features",
                   help="features | qa | scaling | select | readers | decoder | ask | live-soak")
    p.add_argument("--quick", action="store_true", help="small settings (minutes on a laptop CPU)")
    p.add_argument("--out", default=None, help="results folder: JSON lines, CSV, markdown, plots (default out/bench)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write every row of the run to this JSON file")
    p.add_argument("--model", default=None,
                   help="tiny (default), tiny:FAMILY, random:PRESET (real config, random weights, e.g. "
                        "random:qwen2-vl-2b), or a checkpoint (hub id / folder)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: the suite's, normally cpu)")
    p.add_argument("--dtype", default=None, help="bfloat16, float16, float32 (default: the model's / device's)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: the suite's)")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="a suite's own option (repeatable), e.g. --opt minutes=1; unknown keys are an error")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="run slice I of N (default: RANK/WORLD_SIZE from torchrun/accelerate, else all)")
    p.add_argument("--max-units", type=int, default=None, help="stop after this many units (resume later)")
    p.add_argument("--merge-wait", type=float, default=0.0,
                   help="rank 0 waits up to this many seconds for the other shards before merging")
    p.add_argument("--plots-dir", default=None, help="write PNG plots here (default: --out)")
    for name, what in BENCH_SHORTCUTS:
        p.add_argument(f"--{name}", default=None, help=f"= --opt {name}=...: {what}")
    _add_debug(p)
    p.set_defaults(func=cmd_bench)


# suite options common enough to have their own flag; each is `--opt NAME=VALUE` for the suites declaring it
BENCH_SHORTCUTS = (("methods", "comma-separated method variants"), ("budgets", "comma-separated token budgets"),
                   ("streams", "features: comma-separated stream names"),
                   ("presets", "scaling: comma-separated model presets"),
                   ("frames", "scaling: comma-separated frame counts"),
                   ("tasks", "qa: comma-separated lmms-eval tasks"), ("limit", "qa: questions per task"))


def cmd_bench(args) -> int:
    from pathlib import Path

    from streamprune.bench import protocol, suites

    if args.action == "merge":
        if not args.merge_dir:
            raise UsageError("bench merge needs the results folder: streamprune bench merge OUT")
        return suites.merge_cmd(args.merge_dir, plots_dir=args.plots_dir)
    if args.merge_dir:
        raise UsageError(f"unexpected argument {args.merge_dir!r} (did you mean `bench merge {args.merge_dir}`?)")
    given = protocol.parse_pairs(args.opt)
    given.update({name: getattr(args, name) for name, _ in BENCH_SHORTCUTS if getattr(args, name) is not None})
    opts = suites.options(args.suite, given=given, out=Path(args.out) if args.out else protocol.DEFAULT_OUT,
                          json=args.json, quick=args.quick, device=args.device, model=args.model, dtype=args.dtype,
                          threads=args.threads)
    return suites.run_suite(args.suite, opts, shard=args.shard, max_units=args.max_units,
                            merge_wait=args.merge_wait, plots_dir=args.plots_dir)


# ---------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="streamprune", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (and debug logging)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add in (add_ask, add_live, add_bench, add_tiny_model):
        add(sub)
    return parser


def _one_line(e: BaseException) -> str:
    """The first non-empty line of the message; the type name for an error the code did not expect."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    msg = lines[0] if lines else ""
    if isinstance(e, MemoryError):
        return f"out of memory{': ' + msg if msg else ''}"
    if isinstance(e, (ValueError, OSError)):
        return msg or type(e).__name__
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__  # unexpected: say what it was


def _unknown_dash_words(argv: list[str], parser) -> list[int]:
    """Positions of `ask`'s arguments that look like a one-dash word no option knows ("-what"): a question
    taken for an option (not "--typo", not a negative number, nothing after `--`)."""
    cmd = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if cmd is None or argv[cmd] != "ask":
        return []
    ask = parser._subparsers._group_actions[0].choices["ask"]
    known = set(ask._option_string_actions) | set(parser._option_string_actions)
    end = argv.index("--") if "--" in argv else len(argv)
    return [i for i in range(cmd + 1, end) if argv[i].startswith("-") and not argv[i].startswith("--")
            and len(argv[i]) > 1 and not argv[i][1:2].isdigit() and argv[i].split("=")[0] not in known]


def _dash_question_argv(argv: list[str], e: ArgumentsError, parser) -> list[str] | None:
    """`ask VIDEO -what`: the question was taken for an unknown option. When it is the only such word,
    the same command line with it after `--`; else None."""
    if "--" in argv or "required: question" not in e.detail:
        return None
    dash = _unknown_dash_words(argv, parser)
    if len(dash) != 1:
        return None
    i = dash[0]
    return [*argv[:i], *argv[i + 1:], "--", argv[i]]


def _maybe_tune_malloc(args) -> None:
    """The allocator tuning (readers.base.tune_malloc), opt-in: --tune-malloc or STREAMPRUNE_MALLOPT=1."""
    import os

    if getattr(args, "tune_malloc", False) or os.environ.get("STREAMPRUNE_MALLOPT", "").lower() in ("1", "true", "yes"):
        from .readers.base import tune_malloc

        if not tune_malloc(apply=True):
            logging.getLogger(__name__).warning("--tune-malloc: not a glibc system, allocator left as it is")


def main(argv: list[str] | None = None) -> int:
    """The one error path: every failure is one line on stderr (`error: ...`) and exit code 2; an
    interrupt is exit 130; the traceback only with --debug."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in (argv[: argv.index("--")] if "--" in argv else argv)
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except ArgumentsError as e:
            retry = _dash_question_argv(argv, e, parser)
            if retry is None:
                if _unknown_dash_words(argv, parser) and (
                        "required: question" in e.detail or "unrecognized arguments" in e.detail):
                    raise UsageError(f"{e}; {DASH_HINT}") from None
                raise
            try:
                args = parser.parse_args(retry)
            except ArgumentsError:
                raise UsageError(f"{e}; {DASH_HINT}") from None
        debug = bool(getattr(args, "debug", False))
        level = logging.DEBUG if (args.verbose or debug) else logging.WARNING
        handler = logging.StreamHandler()
        handler.setFormatter(OneLineFormatter())  # warnings in one style: `warning: ...` on one line
        logging.basicConfig(level=level, handlers=[handler])
        _maybe_tune_malloc(args)
        return int(args.func(args) or 0)
    except SystemExit:  # --help, or a subcommand's own exit code
        raise
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        err.print("[red]error:[/red] interrupted", highlight=False)
        return 130
    except Exception as e:  # noqa: BLE001 - the one top-level error path: one line, no traceback
        if debug:
            traceback.print_exc()
        err.print(f"[red]error:[/red] {escape(_one_line(e))}", highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
