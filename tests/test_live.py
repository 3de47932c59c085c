"""`streamprune live` against a generated MPEG-TS stream served on 127.0.0.1 by a PyAV sender subprocess."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from streamprune.cli import main
from streamprune.live import LiveSession, parse_questions
from streamprune.pipeline import AskConfig

from test_pipeline import make_video  # tests/ is on sys.path (pytest rootdir-less prepend mode)

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
