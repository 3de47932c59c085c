"""`streamprune live` against a generated MPEG-TS stream served on 127.0.0.1 by a PyAV sender subprocess."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from streamprune.cli import main
from streamprune.live import LiveSession, parse_questions
from streamprune.pipeline import AskConfig

from streamprune.bench.clips import write_box_clip as make_video

SENDER = r"""
import sys, time, av, numpy as np
port, seconds, rate = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
c = av.open(f"tcp://127.0.0.1:{port}?listen=1", "w", format="mpegts")
s = c.add_stream("mpeg4", rate=rate)
s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
t0 = time.monotonic()
for i in range(int(seconds * rate)):
    im = np.full((64, 96, 3), 40 + (i * 9) % 200, np.uint8)
    im[16:32, (i * 5) % 80:(i * 5) % 80 + 16] = 255
    for p in s.encode(av.VideoFrame.from_ndarray(im, format="rgb24")):
        c.mux(p)
    delay = t0 + (i + 1) / rate - time.monotonic()   # real time
    if delay > 0:
        time.sleep(delay)
for p in s.encode():
    c.mux(p)
c.close()
"""



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    out = tmp_path_factory.mktemp("m") / "qwen"
    assert main(["tiny-model", "qwen2_vl", str(out)]) == 0
    return out


def test_parse_questions():
    qs = parse_questions("# comment\n3.5\tWhat is red?\n\n1\tWho is there?\n")
    assert qs == [(1.0, "Who is there?"), (3.5, "What is red?")]
    for bad in ("abc\tq", "3 what?", "-1\tq", "2\t  "):
        with pytest.raises(ValueError):
            parse_questions(bad)


def test_live_tcp_stream_scripted_questions(tmp_path, tiny_qwen, capsys):
    port = free_port()
    sender = subprocess.Popen([sys.executable, "-c", SENDER, str(port), "6", "4"], stderr=subprocess.PIPE)
    try:
        qfile = tmp_path / "q.tsv"
        qfile.write_text("1.5\tWhat is moving?\n4\tWhere is the box?\n")
        t = time.monotonic()
        code = main(["live", "--source", f"tcp://127.0.0.1:{port}", "--questions", str(qfile), "--model",
                     str(tiny_qwen), "--budget", "8", "--memory", "24", "--fps", "2", "--max-new-tokens", "2",
                     "--retry-for", "1"])
        elapsed = time.monotonic() - t
        out, err = capsys.readouterr()
    finally:
        sender.kill()
        sender.wait()
    assert code == 0, err
    answers = [json.loads(line) for line in out.splitlines()]
    assert [a["question"] for a in answers] == ["What is moving?", "Where is the box?"]
    assert not answers[0]["at_end"]  # the stream reached 1.5 s while running
    for a, due in zip(answers, (1.5, 4.0)):
        assert "answer" in a, a
        assert a["time"] == due
        # asked when the stream reached the question's time: the memory covers the stream up to just before
        # it (never later); a question still pending at the end of the stream sees the final memory
        assert a["span"][0] == pytest.approx(0.0, abs=0.6)
        assert a["span"][1] <= due
        if not a["at_end"]:
            assert a["span"][1] >= due - 2.0 and a["stream_time"] < due
        assert a["tokens_to_llm"] <= 8 and a["tokens_kept"] <= 24
    assert answers[1]["tokens_seen"] > answers[0]["tokens_seen"]
    assert elapsed < 40  # ended by itself: end of stream, short reconnect window
    assert "stream ended" in err


def test_live_session_file_replay_memory_bounded(tmp_path, tiny_qwen):
    from streamprune.models import load_model

    video = make_video(tmp_path / "v.mp4", n_frames=24, rate=4)
    adapter = load_model(str(tiny_qwen))
    got = []
    seen_sizes = []
    session = LiveSession(adapter, AskConfig(budget=6, memory=20, fps=2, max_new_tokens=2), str(video),
                          questions=[(2.0, "What is white?"), (99.0, "What happened?")], on_answer=got.append)
    session.asked.put("Is there a box?")  # as if typed at the prompt: answered as soon as there is memory
    stats = session.run(status=lambda s: seen_sizes.append(s.tokens_kept))
    assert stats.processed == 12 and stats.dropped == 0
    assert max(seen_sizes) <= 20 and stats.tokens_kept <= 20
    assert [a["question"] for a in got] == ["Is there a box?", "What is white?", "What happened?"]
    typed, due, late = got
    assert typed["span"] == [0.0, 0.5] and not typed["at_end"]  # after the first block (2 frames at 2 fps)
    assert due["span"][1] < 2.0 and not due["at_end"]
    assert late["at_end"] and late["span"][1] == pytest.approx(5.5)  # never reached: the final memory
    assert all(a["tokens_to_llm"] <= 6 for a in got)


def test_live_bad_inputs_exit_2(tmp_path, tiny_qwen, capsys):
    q = tmp_path / "q.tsv"
    q.write_text("soon\tWhat?\n")
    video = make_video(tmp_path / "v.mp4", n_frames=4, rate=2)
    for argv in (["--source", str(tmp_path / "missing.mp4")], ["--source", str(video), "--questions", str(q)],
                 ["--source", str(video), "--budget", "-1"]):
        code = main(["live", *argv, "--model", str(tiny_qwen)])
        out, err = capsys.readouterr()
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_live_end_of_stream_includes_an_odd_tail_frame(tmp_path, tiny_qwen):
    """11 sampled frames with 2-frame blocks: the last one still enters memory before the final answers."""
    from streamprune.models import load_model

    video = make_video(tmp_path / "v.mp4", n_frames=22, rate=4)  # 5.5 s; at 2 fps frames at 0, 0.5, .., 5.0
    got = []
    session = LiveSession(load_model(str(tiny_qwen)), AskConfig(budget=6, memory=20, fps=2, max_new_tokens=2),
                          str(video), questions=[(99.0, "What happened?")], on_answer=got.append)
    stats = session.run()
    assert stats.processed == 11
    (late,) = got
    assert late["at_end"] and late["span"][1] == pytest.approx(5.0)


# ---------------------------------------------------------------- reliability (issue 11)
LIVE_SENDER = Path(__file__).with_name("_live_sender.py")
TINY = ["--budget", "8", "--memory", "24", "--max-new-tokens", "2"]

# Runs streamprune.cli.main for each argv in turn, in one process (one import of torch/transformers); the
# last run exits the interpreter through sys.exit(main(argv)), exactly as the console script does.
DRIVER = r"""
import json, signal, sys
# a harness started in the background (nohup, `cmd &` without job control) hands its children SIGINT ignored,
# and Python then installs no handler: give the driver the interactive default, which is what is under test
signal.signal(signal.SIGINT, signal.default_int_handler)
from streamprune.cli import main
runs = json.loads(sys.argv[1])
for i, argv in enumerate(runs):
    sys.stderr.write(f"--- run {i}\n"); sys.stderr.flush()
    if i == len(runs) - 1:
        sys.exit(main(argv))
    print(f"RC {main(argv)}", flush=True)
"""


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):  # 120 s at 10 fps: never ends by itself within a test
    return make_video(tmp_path_factory.mktemp("long") / "long.mp4", n_frames=1200, rate=10)


@pytest.fixture(scope="module")
def early_question(tmp_path_factory):  # answered 0.5 s into the stream: the run is processing
    q = tmp_path_factory.mktemp("q") / "q.tsv"
    q.write_text("0.5\tWhat is it?\n")
    return q


def interrupt_runs(runs: list[list[str]], limit: float = 400.0, seed: int = 0):
    """Each run is sent SIGINT a random 0-0.4 s after its first answer. (exit codes, stderr per run)."""
    p = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(runs)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(limit, p.kill)
    watchdog.start()
    err_lines: list[str] = []
    reader = threading.Thread(target=lambda: err_lines.extend(p.stderr), daemon=True)
    reader.start()
    rng, codes, sent = random.Random(seed), [], False
    try:
        for line in p.stdout:
            if line.startswith("{") and not sent:  # processing: interrupt it
                time.sleep(rng.uniform(0.0, 0.4))
                p.send_signal(signal.SIGINT)
                sent = True
            elif line.startswith("RC "):
                codes.append(int(line.split()[1]))
                sent = False
        codes.append(p.wait(30))
    finally:
        watchdog.cancel()
        if p.poll() is None:
            p.kill()
        reader.join(10)
    chunks = re.split(r"^--- run \d+\n", "".join(err_lines), flags=re.M)[1:]
    return codes, chunks


def assert_interrupted_cleanly(codes, chunks, n):
    assert len(codes) == n and len(chunks) == n, (codes, chunks)
    for code, err in zip(codes, chunks):
        assert code == 130, (code, err)  # never a signal death (negative code: SIGSEGV was -11)
        for bad in ("Traceback", "Fatal Python error", "Segmentation", "core dumped"):
            assert bad not in err, err
        summary = [ln for ln in err.splitlines() if "watched" in ln]
        assert len(summary) == 1 and summary[0].startswith("interrupted: watched "), err


def test_sigint_on_a_file_never_crashes(tiny_qwen, long_video, early_question):
    """`live --source FILE` without --realtime: SIGINT while the capture thread reads the file, 5 times."""
    argv = ["live", "--source", str(long_video), "--fps", "10", "--questions", str(early_question),
            "--model", str(tiny_qwen), *TINY]
    codes, chunks = interrupt_runs([argv] * 5)
    assert_interrupted_cleanly(codes, chunks, 5)


def test_sigint_on_a_realtime_file_and_a_stream(tiny_qwen, long_video, early_question):
    sender = subprocess.Popen([sys.executable, str(LIVE_SENDER), "tcp", "600", "20", "close"],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(sender.stdout.readline())
        common = ["--fps", "4", "--questions", str(early_question), "--model", str(tiny_qwen), *TINY]
        codes, chunks = interrupt_runs([["live", "--source", str(long_video), "--realtime", *common],
                                        ["live", "--source", f"tcp://127.0.0.1:{port}", "--retry-for", "1",
                                         *common]])
    finally:
        sender.kill()
        sender.wait()
    assert_interrupted_cleanly(codes, chunks, 2)


class _ProbeReader:
    """A file reader that, like PyAV's, must not be closed by another thread while it is being read."""

    def __init__(self, frames):
        self.frames, self.closed_by, self.capture_alive_at_close = frames, None, None

    def __iter__(self):
        for f in self.frames:
            time.sleep(0.005)
            yield f

    def close(self):
        me = threading.current_thread()
        self.closed_by = me.name
        self.capture_alive_at_close = any(t.name == "streamprune-capture" and t is not me and t.is_alive()
                                          for t in threading.enumerate())


def _probe_session(tmp_path, tiny_qwen, monkeypatch, **kw):
    from streamprune.models import load_model
    from streamprune.readers import open_video

    video = make_video(tmp_path / "v.mp4", n_frames=40, rate=4)
    with open_video(video, fps=4) as r:
        frames = list(r)
    probe = _ProbeReader(frames)
    monkeypatch.setattr(LiveSession, "_open", lambda self: probe)
    adapter = load_model(str(tiny_qwen))
    session = LiveSession(adapter, AskConfig(budget=6, memory=20, fps=4, max_new_tokens=2), str(video), **kw)
    return session, adapter, probe


def test_worker_error_shuts_down_in_order(tmp_path, tiny_qwen, monkeypatch):
    session, adapter, probe = _probe_session(tmp_path, tiny_qwen, monkeypatch)
    real, calls = adapter.encode, []

    def encode(images, times):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom in encode")
        return real(images, times)

    adapter.encode = encode
    with pytest.raises(RuntimeError, match="boom"):
        session.run()
    assert probe.closed_by is not None and not probe.capture_alive_at_close  # closed after the join
    assert session.stats.end_reason == "error: boom in encode"


def test_interrupt_in_the_worker_shuts_down_in_order(tmp_path, tiny_qwen, monkeypatch):
    def ctrl_c(answer):
        raise KeyboardInterrupt  # as if Ctrl-C came while answering

    session, _, probe = _probe_session(tmp_path, tiny_qwen, monkeypatch, questions=[(1.0, "What?")],
                                       on_answer=ctrl_c)
    stats = session.run()
    assert stats.interrupted and stats.end_reason == "interrupted" and not stats.lost
    assert probe.closed_by is not None and not probe.capture_alive_at_close
    assert 0 < stats.processed < 40


def test_worker_error_through_the_cli_is_one_error_line(tmp_path, tiny_qwen, capsys, monkeypatch, early_question):
    from streamprune import models

    real_load = models.load_model

    def failing_load(*a, **k):
        adapter = real_load(*a, **k)
        real, calls = adapter.encode, []

        def encode(images, times):
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("boom in encode")
            return real(images, times)

        adapter.encode = encode
        return adapter

    monkeypatch.setattr(models, "load_model", failing_load)
    video = make_video(tmp_path / "v.mp4", n_frames=40, rate=4)
    code = main(["live", "--source", str(video), "--fps", "4", "--questions", str(early_question),
                 "--model", str(tiny_qwen), *TINY])
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "boom in encode" in errors[0], err
    assert "Traceback" not in err
    assert [ln for ln in err.splitlines() if "watched" in ln][0].startswith("stopped by an error: watched ")


def test_lost_stream_exits_3_and_an_ended_file_0(tmp_path, tiny_qwen, capsys):
    sender = subprocess.Popen([sys.executable, str(LIVE_SENDER), "tcp", "40", "20", "stall"],
                              stdout=subprocess.PIPE, text=True)  # 2 s of video, then silence
    try:
        port = int(sender.stdout.readline())
        t0 = time.monotonic()
        code = main(["live", "--source", f"tcp://127.0.0.1:{port}", "--fps", "4", "--timeout", "1",
                     "--retry-for", "0.5", "--model", str(tiny_qwen), *TINY])
        elapsed = time.monotonic() - t0
    finally:
        sender.kill()
        sender.wait()
    err = capsys.readouterr().err
    assert code == 3, err
    (summary,) = [ln for ln in err.splitlines() if "watched" in ln]
    assert summary.startswith("error: source lost before its end (no data for 1s; gave up after retrying for 0.5s)")
    assert "Traceback" not in err and elapsed < 30

    video = make_video(tmp_path / "v.mp4", n_frames=8, rate=4)
    assert main(["live", "--source", str(video), "--fps", "4", "--model", str(tiny_qwen), *TINY]) == 0
    err = capsys.readouterr().err
    assert [ln for ln in err.splitlines() if "watched" in ln][0].startswith("end of file: watched 1.8 s, 8 frames")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX named pipes and ptys")
def test_fifo_source_without_writer_is_one_error_line(tmp_path, tiny_qwen, capsys):
    fifo = tmp_path / "cam.fifo"
    os.mkfifo(fifo)
    box = {}
    th = threading.Thread(target=lambda: box.setdefault("code", main(
        ["live", "--source", str(fifo), "--timeout", "1", "--model", str(tiny_qwen), *TINY])), daemon=True)
    th.start()
    th.join(60)
    if th.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # unblock the reader stuck in open(2)
    assert not th.is_alive(), "live --source FIFO blocked, ignoring --timeout"
    err = capsys.readouterr().err
    assert box["code"] == 2, err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert "no writer within 1s" in line and "Traceback" not in err


def test_live_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["live", "--help"])
    out = capsys.readouterr().out
    for code in ("0 ", "2 ", "3 ", "130"):
        assert re.search(rf"^\s+{code}", out, re.M), out


def _screen_lines(raw: bytes) -> list[str]:
    """The lines a terminal shows for `raw` (\\r, erase-to-end-of-line and newlines applied; colours dropped)."""
    text = re.sub(r"\x1b\[[0-9;?]*[A-JL-Za-z]", "", raw.decode("utf-8", "replace"))  # SGR etc., not \x1b[K
    lines, cur, col = [], [], 0
    i = 0
    while i < len(text):
        ch = text[i]
        if text.startswith("\x1b[K", i):
            del cur[col:]
            i += 3
            continue
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append("".join(cur))
            cur, col = [], 0
        else:
            if col < len(cur):
                cur[col] = ch
            else:
                cur.append(ch)
            col += 1
        i += 1
    if cur:
        lines.append("".join(cur))
    return lines


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX named pipes and ptys")
def test_terminal_ctrl_d_ends_cleanly_status_line_cleared_no_loading_bars(tiny_qwen, long_video):
    """At a terminal (a pty): the status line is up, a typed question is answered on a line of its own,
    Ctrl-D ends the session with exit 0; no transformers progress bar ("Loading weights") anywhere."""
    import pty
    import select
    import termios

    master, slave = pty.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[3] &= ~termios.ECHO  # the test types blind: echo is the terminal's, not the program's output
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM", "COLUMNS")}
    env.update(TERM="xterm", COLUMNS="200")
    p = subprocess.Popen([sys.executable, "-m", "streamprune.cli", "live", "--source", str(long_video), "--realtime",
                          "--fps", "4", "--model", str(tiny_qwen), *TINY], stdin=slave, stdout=slave, stderr=slave,
                         env=env, close_fds=True)
    os.close(slave)
    buf = bytearray()

    def read_until(pred, limit):
        deadline = time.monotonic() + limit
        while not pred(bytes(buf)) and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the program closed the terminal (exited)
                    return
                if not chunk:
                    return
                buf.extend(chunk)

    try:
        read_until(lambda b: b"MB ans" in b, 180)  # the status line is up: it is watching
        os.write(master, b"What is it?\n")
        read_until(lambda b: re.search(rb"\[\d+\.\d-\d+\.\ds\] ", b) is not None, 60)
        os.write(master, b"\x04")  # Ctrl-D
        code = p.wait(60)
        read_until(lambda b: False, 1)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    raw = bytes(buf)
    lines = _screen_lines(raw)
    text = "\n".join(lines)
    assert code == 0, text
    assert b"MB ans" in raw  # the status line was shown ...
    status = re.compile(r"t=\S+ src \S+ proc \S+ drop \d+ tok \d+->\d+ \d+MB ans \S+")
    for ln in lines:  # ... and nothing was ever appended to it or printed over it
        if "MB ans" in ln or "tok " in ln:
            assert status.fullmatch(ln), ln
    assert any(re.match(r"\[\d+\.\d-\d+\.\ds\] ", ln) for ln in lines), text  # the answer, on its own line
    (summary,) = [ln for ln in lines if "watched" in ln]
    assert summary.startswith("end of input: watched ")
    assert "Loading weights" not in text and "Traceback" not in text and "it/s" not in text
    assert all(ln.startswith("warning: ") for ln in lines if "warning" in ln.lower()), text
