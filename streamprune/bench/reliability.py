"""Reliability corpus: bad and odd inputs through the real `streamprune` CLI (issue 11).

    python -m streamprune.bench.reliability [--out bench/RESULTS-reliability.md] [--only NAME,...]

Every case is data: (name, group, argv builder, expected exit code, a phrase the error must hold). The
builders make their inputs on the fly in a scratch folder (files, model folders, a tiny random-weight
model and a small clip made once). Each case runs `streamprune.cli.main(argv)` in-process with stdout and
stderr captured (a few run as a real subprocess), and passes when the exit code is the expected one, a
failure prints exactly one `error:` line (holding the phrase) and nothing on stdout, a success prints its
answer, no output holds a traceback, and it finishes within its time limit. tests/test_reliability_corpus.py
runs the same list; `main()` renders it as a markdown table (case, expected, observed, seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import clips
from .clips import write_audio_only, write_index_only, write_no_frames, write_png, write_resolution_change

QUESTION = "Where is the white box?"
LIMIT_S = 60.0  # per case: generous for a loaded 2-core machine (a tiny-model answer takes about 1 s)


# ---------------------------------------------------------------- inputs made on the fly (bench.clips)
def write_video(path: Path, *, n: int = 6, w: int = 64, h: int = 48, rate: float = 2, codec: str = "mpeg4",
                **kw) -> Path:
    """n frames of a moving white box (clips.box_frame) through clips.write_clip (kw: its options)."""
    if codec == "libx264":
        kw.setdefault("options", {"preset": "ultrafast"})
    return clips.write_video(path, n=n, w=w, h=h, rate=rate, codec=codec, frame=clips.box_frame, **kw)


def corrupt_packets(src: Path, dst: Path, first: int, count: int, seed: int = 0) -> Path:
    """A copy of src with the payload of `count` video packets from packet `first` replaced by random bytes."""
    return clips.corrupt_packets(src, first, count, seed, dst=dst)


class Ctx:
    """The scratch folder, the tiny model and the small clip every case shares (made on first use)."""

    def __init__(self, root: Path, model: Path | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._model = model
        self._made: dict[str, Path] = {}

    @property
    def model(self) -> Path:
        if self._model is None:
            from streamprune.models import write_tiny_model

            self._model = write_tiny_model("qwen2_vl", self.root / "tiny-qwen2_vl")
        return self._model

    @property
    def clip(self) -> Path:
        return self.make("clip.mp4", lambda p: write_video(p, n=8, rate=2))

    def make(self, name: str, build: Callable[[Path], Path]) -> Path:
        """root/name built once by build(path)."""
        if name not in self._made:
            path = self.root / name
            out = build(path)
            self._made[name] = Path(out) if out is not None else path
        return self._made[name]

    def model_dir(self, name: str, files: dict[str, bytes | str | None], *, from_tiny: bool = False) -> Path:
        """A model folder: a copy of the tiny model (from_tiny) with `files` written over it (None removes)."""
        def build(path: Path) -> Path:
            import shutil

            if from_tiny:
                shutil.copytree(self.model, path)
            else:
                path.mkdir()
            for fname, data in files.items():
                f = path / fname
                if data is None:
                    f.unlink(missing_ok=True)
                else:
                    f.write_bytes(data.encode() if isinstance(data, str) else data)
            return path

        return self.make(name, build)


# ---------------------------------------------------------------- the cases
@dataclass(frozen=True)
class Case:
    name: str
    group: str                                 # file | argument | question | model | command
    argv: Callable[[Ctx], list[str]]           # the command line after `streamprune`
    expected: int | Callable[[], int]          # exit code (callable: depends on the machine, e.g. CUDA)
    needle: str = ""                           # the error line holds this (case-insensitive)
    env: dict = field(default_factory=dict)    # environment for the run
    subprocess: bool = False                   # run `python -m streamprune.cli` instead of main() in-process
    limit: float = LIMIT_S

    def expected_code(self) -> int:
        return self.expected() if callable(self.expected) else int(self.expected)


def _ask(video: Callable[[Ctx], object], *extra: str, question: str | None = QUESTION) -> Callable[[Ctx], list[str]]:
    """An `ask` command line on `video(ctx)` with the tiny model, a small budget and --json, plus extra."""
    def build(ctx: Ctx) -> list[str]:
        q = [] if question is None else [question]
        return ["ask", str(video(ctx)), *q, "--model", str(ctx.model), "--budget", "8", "--max-new-tokens", "2",
                "--json", *extra]
    return build


def _with_model(model: Callable[[Ctx], object]) -> Callable[[Ctx], list[str]]:
    return lambda ctx: ["ask", str(ctx.clip), QUESTION, "--model", str(model(ctx)), "--max-new-tokens", "2", "--json"]


def _clip(ctx: Ctx) -> Path:
    return ctx.clip


def _file(name: str, build: Callable[[Path], Path]) -> Callable[[Ctx], Path]:
    return lambda ctx: ctx.make(name, build)


def _cuda_code() -> int:
    import torch

    return 0 if torch.cuda.is_available() else 2


def _flash_code() -> int:
    import importlib.util

    return 0 if importlib.util.find_spec("flash_attn") is not None and _cuda_code() == 0 else 2


def _bytes(name: str, data: bytes) -> Callable[[Ctx], Path]:
    def build(path: Path) -> Path:
        path.write_bytes(data)
        return path
    return _file(name, build)


def _from_clip(name: str, edit: Callable[[bytes], bytes]) -> Callable[[Ctx], Path]:
    """A file holding edit(the clip's bytes)."""
    def get(ctx: Ctx) -> Path:
        def build(path: Path) -> Path:
            path.write_bytes(edit(ctx.clip.read_bytes()))
            return path
        return ctx.make(name, build)
    return get


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _safetensors_cut(frac: float) -> Callable[[Ctx], Path]:
    def build(ctx: Ctx) -> Path:
        data = (ctx.model / "model.safetensors").read_bytes()
        return ctx.model_dir(f"model-cut-{frac}", {"model.safetensors": data[: int(len(data) * frac)]}, from_tiny=True)
    return build


def _config_only(ctx: Ctx) -> Path:
    return ctx.model_dir("model-config-only", {"config.json": (ctx.model / "config.json").read_text()})


def _tiny_without(fname: str) -> Callable[[Ctx], Path]:
    return lambda ctx: ctx.model_dir(f"model-no-{fname}", {fname: None}, from_tiny=True)


_BAD_BYTES = bytes(range(256)) * 64

CASES: list[Case] = [
    # -- files
    Case("missing file", "file", _ask(lambda c: c.root / "missing.mp4"), 2, "no such file"),
    Case("missing file (subprocess)", "file", _ask(lambda c: c.root / "missing.mp4"), 2, "no such file", subprocess=True),
    Case("empty file", "file", _ask(_bytes("empty.mp4", b"")), 2, "empty"),
    Case("text file", "file", _ask(_bytes("notes.mp4", b"just some text\n" * 50)), 2),
    Case("random bytes", "file", _ask(_bytes("noise.mp4", _BAD_BYTES)), 2),
    Case("header only (first 1 KiB)", "file", _ask(_from_clip("head.mp4", lambda b: b[:1024])), 2),
    Case("truncated at 50% (index at the end)", "file", _ask(_from_clip("half.mp4", lambda b: b[: len(b) // 2])), 2),
    Case("a folder", "file", _ask(_file("a-folder", _mkdir)), 2, "is a directory"),
    Case("/dev/null", "file", _ask(lambda c: "/dev/null"), 2, "device"),
    Case("a FIFO with no writer", "file", _ask(_file("fifo.mp4", _fifo)), 2, "fifo", limit=20.0),
    Case("MP4 written with no frame", "file", _ask(_file("noframes.mp4", write_no_frames)), 2, "no readable video stream"),
    Case("faststart MP4 cut after its index", "file", _ask(_file("index-only.mp4", write_index_only)), 2),
    Case("audio only", "file", _ask(_file("audio.m4a", write_audio_only)), 2),
    Case("a PNG image", "file", _ask(_file("still.png", write_png)), 0),
    Case("2x2 frames", "file", _ask(_file("tiny2x2.mp4", lambda p: write_video(p, w=2, h=2, codec="libx264"))), 0),
    Case("odd size 33x17 (ffv1)", "file",
         _ask(_file("odd.mkv", lambda p: write_video(p, w=33, h=17, codec="ffv1", pix_fmt="yuv444p"))), 0),
    Case("very wide 1280x16", "file", _ask(_file("wide.mp4", lambda p: write_video(p, w=1280, h=16))), 0),
    Case("very tall 16x720", "file", _ask(_file("tall.mp4", lambda p: write_video(p, w=16, h=720))), 0),
    Case("1080p single frame", "file", _ask(_file("hd1.mp4", lambda p: write_video(p, n=1, w=1920, h=1080))), 0),
    Case("one frame", "file", _ask(_file("one.mp4", lambda p: write_video(p, n=1))), 0),
    Case("rotated 90 degrees", "file", _ask(_file("rot.mp4", lambda p: write_video(p, codec="libx264",
                                                                                    rotation=90))), 0),
    Case("variable frame rate", "file",
         _ask(_file("vfr.mkv", lambda p: write_video(p, n=8, codec="libx264", pts_ms=[0, 40, 900, 950, 2100, 2200,
                                                                                        3500, 3990]))), 0),
    Case("MJPEG in AVI", "file", _ask(_file("mjpeg.avi", lambda p: write_video(p, codec="mjpeg",
                                                                               pix_fmt="yuvj420p"))), 0),
    Case("VP9 in WebM", "file", _ask(_file("vp9.webm", lambda p: write_video(p, codec="libvpx-vp9"))), 0),
    Case("no file extension", "file", _ask(_from_clip("clip-no-ext", lambda b: b)), 0),
    Case("spaces and unicode in the path", "file", _ask(_from_clip("vidéo clip ü.mp4", lambda b: b)), 0),
    Case("garbage over two packets mid-stream", "file",
         _ask(lambda c: c.make("garbled.mp4", lambda p: corrupt_packets(c.clip, p, 3, 2))), 0),
    Case("resolution change mid-stream (MPEG-TS)", "file", _ask(_file("reschange.ts", write_resolution_change),
                                                                "--fps", "4"), 0),
    # -- numeric arguments
    Case("--budget 0", "argument", _ask(_clip, "--budget", "0"), 2, "budget"),
    Case("--budget -1", "argument", _ask(_clip, "--budget", "-1"), 2, "budget"),
    Case("--budget 10**12", "argument", _ask(_clip, "--budget", str(10**12)), 2, "2**24"),
    Case("--budget x", "argument", _ask(_clip, "--budget", "x"), 2, "--budget"),
    Case("--budget inf", "argument", _ask(_clip, "--budget", "inf"), 2, "--budget"),
    Case("--budget 2.5", "argument", _ask(_clip, "--budget", "2.5"), 2, "--budget"),
    Case("--memory below --budget", "argument", _ask(_clip, "--memory", "4"), 2, "memory"),
    Case("--memory 2**40", "argument", _ask(_clip, "--memory", str(2**40)), 2, "2**24"),
    Case("--fps 0", "argument", _ask(_clip, "--fps", "0"), 2, "fps"),
    Case("--fps -1", "argument", _ask(_clip, "--fps", "-1"), 2, "fps"),
    Case("--fps nan", "argument", _ask(_clip, "--fps", "nan"), 2, "fps"),
    Case("--fps inf", "argument", _ask(_clip, "--fps", "inf"), 2, "fps"),
    Case("--fps 1e6", "argument", _ask(_clip, "--fps", "1e6"), 0),
    Case("--fps 0.01 (less than one frame)", "argument", _ask(_clip, "--fps", "0.01"), 0),
    Case("--max-frames 0", "argument", _ask(_clip, "--max-frames", "0"), 2, "max_frames"),
    Case("--max-frames 2.5", "argument", _ask(_clip, "--max-frames", "2.5"), 2, "--max-frames"),
    Case("--max-frames 1", "argument", _ask(_clip, "--max-frames", "1"), 0),
    Case("--max-new-tokens 0", "argument", _ask(_clip, "--max-new-tokens", "0"), 2, "max_new_tokens"),
    Case("--alpha -1", "argument", _ask(_clip, "--alpha", "-1"), 2, "alpha"),
    Case("--alpha nan", "argument", _ask(_clip, "--alpha", "nan"), 2, "alpha"),
    Case("--seed x", "argument", _ask(_clip, "--seed", "x"), 2, "--seed"),
    Case("--method bogus", "argument", _ask(_clip, "--method", "bogus"), 2, "method"),
    Case("--method uniform", "argument", _ask(_clip, "--method", "uniform"), 0),
    Case("--save-kept not a .png", "argument", _ask(_clip, "--save-kept", "kept.jpg"), 2, "png"),
    Case("--save-kept in a missing folder", "argument",
         lambda c: _ask(_clip, "--save-kept", str(c.root / "no" / "such" / "k.png"))(c), 2, "png"),
    Case("--save-kept", "argument", lambda c: _ask(_clip, "--save-kept", str(c.root / "kept.png"))(c), 0),
    # -- the question
    Case("empty question", "question", _ask(_clip, question=""), 2, "question"),
    Case("whitespace question", "question", _ask(_clip, question="   \t "), 2, "question"),
    Case("no question", "question", _ask(_clip, question=None), 2, "question"),
    Case("question '-what' (taken for an option)", "question", _ask(_clip, question="-what"), 0),
    Case("question after --", "question", lambda c: [*_ask(_clip, question=None)(c), "--", "-what?"], 0),
    Case("two dash words, no question", "question", _ask(_clip, "-x", question="-what"), 2, "--"),
    Case("question of stop words", "question", _ask(_clip, question="of of the"), 0),
    Case("question 10k characters", "question", _ask(_clip, question="where is the box? " * 560), 0),
    # -- model options
    Case("--dtype int3", "argument", _ask(_clip, "--dtype", "int3"), 2, "dtype"),
    Case("--device banana", "argument", _ask(_clip, "--device", "banana"), 2, "device"),
    Case("--device banana (subprocess)", "argument", _ask(_clip, "--device", "banana"), 2, "device", subprocess=True),
    Case("--device cuda", "argument", _ask(_clip, "--device", "cuda"), _cuda_code, "cuda"),
    Case("--device cuda:99", "argument", _ask(_clip, "--device", "cuda:99"), 2, "cuda"),
    Case("--device meta", "argument", _ask(_clip, "--device", "meta"), 2, "meta"),
    Case("--attn bogus", "argument", _ask(_clip, "--attn", "bogus"), 2, "attention"),
    Case("--attn flash_attention_2", "argument", _ask(_clip, "--attn", "flash_attention_2"), _flash_code, "flash"),
    Case("--attn eager", "argument", _ask(_clip, "--attn", "eager"), 0),
    # -- model folders
    Case("model folder missing", "model", _with_model(lambda c: c.root / "no-model"), 2, "no such folder"),
    Case("model folder without config.json", "model", _with_model(lambda c: c.model_dir("model-empty", {})), 2,
         "config.json"),
    Case("config.json not JSON", "model", _with_model(lambda c: c.model_dir("model-badjson", {"config.json": "{oops"})),
         2, "json"),
    Case("unsupported model_type", "model",
         _with_model(lambda c: c.model_dir("model-bert", {"config.json": json.dumps({"model_type": "bert"})})), 2,
         "unsupported"),
    Case("config.json only, no weights", "model", _with_model(_config_only), 2, "cannot load"),
    Case("safetensors cut at 50%", "model", _with_model(_safetensors_cut(0.5)), 2, "cannot load"),
    Case("safetensors cut to 10 bytes", "model", _with_model(_safetensors_cut(1e-9)), 2, "cannot load"),
    Case("no tokenizer files", "model", _with_model(lambda c: c.model_dir(
        "model-no-tok", {"tokenizer.json": None, "tokenizer_config.json": None, "vocab.json": None,
                         "merges.txt": None}, from_tiny=True)), 2, "cannot load"),
    Case("a file as --model", "model", _with_model(lambda c: c.clip), 2, "not a model folder"),
    Case("hub id, offline, not cached", "model", _with_model(lambda c: "no-such-org/no-such-model"), 2,
         "tiny-model", env={"HF_HUB_OFFLINE": "1"}),
    Case("hub id, offline (subprocess)", "model", _with_model(lambda c: "no-such-org/no-such-model"), 2,
         "tiny-model", env={"HF_HUB_OFFLINE": "1"}, subprocess=True),
    Case("not a hub id (a/b/c)", "model", _with_model(lambda c: "a/b/c"), 2, "hub id"),
    # -- commands
    Case("no command", "command", lambda c: [], 2, "command"),
    Case("unknown command", "command", lambda c: ["summarise"], 2, "invalid choice"),
    Case("unknown option", "command", _ask(_clip, "--bogus"), 2, "unrecognized"),
    Case("ask --help", "command", lambda c: ["ask", "--help"], 0),
    Case("tiny-model of an unknown family", "command", lambda c: ["tiny-model", "gpt9", str(c.root / "gpt9")], 2),
]


# ---------------------------------------------------------------- running a case
@dataclass
class Result:
    name: str
    group: str
    expected: int
    observed: int | None
    seconds: float
    stdout: str
    stderr: str
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def error_line(self) -> str:
        return next((ln for ln in self.stderr.splitlines() if ln.startswith("error:")), "")


@contextlib.contextmanager
def _env(env: dict):
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_inprocess(argv: list[str], env: dict) -> tuple[int, str, str]:
    from streamprune.cli import main

    out, err = io.StringIO(), io.StringIO()
    with _env(env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # --help
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    return int(code), out.getvalue(), err.getvalue()


def _run_subprocess(argv: list[str], env: dict, limit: float) -> tuple[int | None, str, str]:
    full = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    try:
        p = subprocess.run([sys.executable, "-m", "streamprune.cli", *argv], capture_output=True, text=True,
                           timeout=limit, env=full)
    except subprocess.TimeoutExpired as e:
        return None, e.stdout or "", e.stderr or ""
    return p.returncode, p.stdout, p.stderr


def run_case(case: Case, ctx: Ctx) -> Result:
    """Build the case's inputs, run it, check it (Result.problems empty when it behaved)."""
    argv = [str(a) for a in case.argv(ctx)]
    expected = case.expected_code()
    t = time.perf_counter()
    if case.subprocess:
        code, out, err = _run_subprocess(argv, case.env, case.limit)
    else:
        code, out, err = _run_inprocess(argv, case.env)
    seconds = time.perf_counter() - t
    problems = []
    if code is None:
        problems.append(f"timed out after {case.limit:.0f} s")
    elif code != expected:
        problems.append(f"exit code {code}, expected {expected}")
    if "Traceback" in out or "Traceback" in err:
        problems.append("a traceback was printed")
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    if expected != 0:
        if len(errors) != 1:
            problems.append(f"{len(errors)} `error:` lines, expected 1")
        elif case.needle and case.needle.lower() not in errors[0].lower():
            problems.append(f"error line lacks {case.needle!r}")
        if out.strip():
            problems.append("output on stdout")
    else:
        if errors:
            problems.append("an `error:` line on success")
        if not out.strip():
            problems.append("no answer on stdout")
        elif "--json" in argv:
            try:
                json.loads(out)
            except ValueError:
                problems.append("stdout is not one JSON object")
    if seconds > case.limit:
        problems.append(f"took {seconds:.1f} s, limit {case.limit:.0f} s")
    return Result(case.name, case.group, expected, code, seconds, out, err, problems)


# ---------------------------------------------------------------- the report
def markdown(results: list[Result]) -> str:
    passed = sum(r.ok for r in results)
    lines = [f"{len(results)} cases, {passed} as expected.", "",
             "| case | group | expected | observed | seconds | stderr (error line) | ok |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        msg = (r.error_line or "").replace("|", "\\|")[:160]
        obs = "timeout" if r.observed is None else str(r.observed)
        ok = "yes" if r.ok else "NO: " + "; ".join(r.problems)
        lines.append(f"| {r.name} | {r.group} | {r.expected} | {obs} | {r.seconds:.2f} | {msg} | {ok} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m streamprune.bench.reliability", description=__doc__.split("\n")[0])
    p.add_argument("--out", default=None, help="write the markdown table here (default: stdout)")
    p.add_argument("--only", default=None, help="comma-separated case names")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cases = [c for c in CASES if args.only is None or c.name in args.only.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Ctx(Path(args.workdir or tmp))
        results = []
        for case in cases:
            r = run_case(case, ctx)
            results.append(r)
            print(f"{'ok ' if r.ok else 'BAD'} {r.seconds:6.2f}s  {case.name}  {'; '.join(r.problems)}", file=sys.stderr)
    text = markdown(results)
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
