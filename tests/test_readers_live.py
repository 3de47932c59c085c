"""Live reader: loopback MPEG-TS senders on 127.0.0.1 (TCP, UDP), real-time file replay, failures."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from streamprune.readers import LiveReader, ReaderError, open_live, open_source
from streamprune.bench.clips import green_level, write_video

SENDER = Path(__file__).with_name("_live_sender.py")


def start_sender(*args):
    p = subprocess.Popen([sys.executable, str(SENDER), *map(str, args)], stdout=subprocess.PIPE, text=True)
    port = int(p.stdout.readline())
    return p, port


def free_port(kind=socket.SOCK_STREAM) -> int:
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def procs():
    started = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(5)


def test_tcp_stream_then_disconnect_ends_by_itself(procs):
    p, port = start_sender("tcp", 40, 20, "close")  # 2 s of video at 20 fps, then disconnects
    procs.append(p)
    t0 = time.monotonic()
    r = open_live(f"tcp://127.0.0.1:{port}", fps=5, timeout=5, retry_for=1.0)
    frames = list(r)
    elapsed = time.monotonic() - t0
    assert 3 <= len(frames) <= 11
    times = np.array([f.time for f in frames])
    assert np.all(np.diff(times) > 0.15) and np.all(np.diff(times) < 0.45)  # ~ every 0.2 s of source time
    assert frames[0].image.shape == (48, 64, 3) and frames[0].image.dtype == np.uint8
    assert frames[0].image[:20, :28].mean() > 230
    st = r.stats
    assert st.delivered == len(frames) and st.captured >= len(frames) and st.reconnects == 0
    assert st.source_fps == pytest.approx(20, rel=0.2)
    assert "gave up" in r.end_reason
    assert elapsed < 12  # probe + 2 s of video + 1 s of retries, bounded


def test_stalled_sender_ends_within_bounded_time(procs):
    p, port = start_sender("tcp", 40, 20, "stall")  # 2 s of video, then silence on an open connection
    procs.append(p)
    t0 = time.monotonic()
    r = open_live(f"tcp://127.0.0.1:{port}", fps=None, timeout=1.0, retry_for=1.0)
    frames = list(r)
    elapsed = time.monotonic() - t0
    assert len(frames) >= 3 and r.stats.delivered == len(frames)
    assert r.end_reason is not None and "gave up" in r.end_reason and "no data for 1s" in r.end_reason
    assert elapsed < 9  # 2 s video + 1 s read timeout + 1 s retries (+ probing)
    r.close()


def test_udp_stream(procs):
    port = free_port(socket.SOCK_DGRAM)
    p, _ = start_sender("udp", 40, 20, "close", port)  # starts sending after ~0.5 s of imports
    procs.append(p)
    r = open_live(f"udp://127.0.0.1:{port}", fps=4, timeout=1.5, retry_for=0.5)
    frames = list(r)
    assert len(frames) >= 3 and frames[0].image.shape == (48, 64, 3)
    assert np.all(np.diff([f.time for f in frames]) > 0.15)
    assert r.end_reason is not None


def test_refused_url_raises_within_timeout():
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(ReaderError, match="refused"):
        open_live(f"tcp://127.0.0.1:{port}", timeout=1.0)
    assert time.monotonic() - t0 < 2.5


def test_silent_url_raises_within_timeout():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)  # accepts connections, never sends a byte
    try:
        t0 = time.monotonic()
        with pytest.raises(ReaderError, match="no answer"):
            open_live(f"tcp://127.0.0.1:{srv.getsockname()[1]}", timeout=1.0)
        assert time.monotonic() - t0 < 3
    finally:
        srv.close()


@pytest.mark.parametrize("source", ["97", "/dev/video97"])
def test_missing_webcam(source):
    with pytest.raises(ReaderError) as e:
        open_live(source, timeout=1.0)
    assert "\n" not in str(e.value)


def test_bad_live_arguments(tmp_path):
    with pytest.raises(ReaderError, match="no such file"):
        open_live(tmp_path / "nope.mp4", realtime=True)
    with pytest.raises(ReaderError, match="fps"):
        open_live(tmp_path, fps=0)
    with pytest.raises(ReaderError, match="fps"):
        open_live(tmp_path, fps=float("inf"))


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory):  # 1 s at 20 fps
    return write_video(tmp_path_factory.mktemp("live") / "short.mp4", n=20, rate=20)


def test_realtime_replay_is_paced_and_sampled(short_clip):
    t0 = time.monotonic()
    r = open_source(short_clip, realtime=True, fps=5)
    assert isinstance(r, LiveReader)
    frames = list(r)
    elapsed = time.monotonic() - t0
    assert [f.index for f in frames] == [0, 4, 8, 12, 16]
    assert np.allclose([f.time for f in frames], [0, 0.2, 0.4, 0.6, 0.8], atol=1e-6)
    assert [round(green_level(f.image) / 8) for f in frames] == [0, 4, 8, 12, 16]
    assert elapsed >= 0.8  # paced to wall clock, not decoded as fast as possible
    assert r.end_reason == "end of file" and r.stats.dropped == 0


def test_slow_consumer_gets_newest_frames_and_drops_are_counted(short_clip):
    r = open_live(short_clip, realtime=True, fps=None)
    frames = []
    for f in r:
        frames.append(f)
        time.sleep(0.15)  # 3 source frames arrive per consumer step
    st = r.stats
    assert st.captured == 20 and st.dropped > 0
    assert st.delivered == len(frames) and st.delivered + st.dropped == st.captured
    assert len(frames) < 12 and [f.index for f in frames] == sorted({f.index for f in frames})


def test_close_stops_capture(short_clip):
    r = open_live(short_clip, realtime=True, fps=None)
    next(iter(r))
    r.close()
    assert r.end_reason == "closed"
    captured = r.stats.captured
    rest = list(r)  # at most the one frame already in the mailbox; then the iteration ends
    time.sleep(0.2)
    assert len(rest) <= 1 and r.stats.captured == captured < 20


# ---------------------------------------------------------------- named pipes (issue 11)
def _ts_bytes(n=20, rate=10) -> bytes:
    """n MPEG-TS frames (64x48, mpeg4) in memory: what a writer sends down a named pipe."""
    import io

    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as c:
        s = c.add_stream("mpeg4", rate=rate)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(n):
            img = np.zeros((48, 64, 3), np.uint8)
            img[..., 1] = (i * 8) % 256
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


def _unblock(fifo):
    """A reader blocked in open(2) on the FIFO (the bug) returns once a writer comes and goes."""
    import os

    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def _in_thread(fn, limit):
    """fn() in a daemon thread; (finished, result or exception)."""
    import threading

    out = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001
            out["error"] = e

    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(limit)
    return not th.is_alive(), out


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX named pipes and ptys")
def test_fifo_without_writer_raises_within_timeout(tmp_path):
    import os

    fifo = tmp_path / "cam.fifo"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    done, out = _in_thread(lambda: open_live(fifo, timeout=1.0), limit=8)
    elapsed = time.monotonic() - t0
    if not done:
        _unblock(fifo)
    assert done, "open_live blocked on a FIFO without a writer, ignoring timeout"
    e = out.get("error")
    assert isinstance(e, ReaderError) and "no writer within 1s" in str(e) and "\n" not in str(e), out
    assert elapsed < 4


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX named pipes and ptys")
def test_fifo_with_a_writer_is_read_to_its_end(tmp_path):
    import os
    import threading

    fifo = tmp_path / "cam.fifo"
    os.mkfifo(fifo)
    data = _ts_bytes(20)

    def writer():
        time.sleep(0.3)  # the reader is waiting for a writer first
        with open(fifo, "wb") as f:
            f.write(data)

    threading.Thread(target=writer, daemon=True).start()
    done, out = _in_thread(lambda: list(open_live(fifo, fps=None, timeout=5.0, realtime=True)), limit=30)
    if not done:
        _unblock(fifo)
    assert done and "error" not in out, out
    assert len(out["value"]) >= 15  # newest-frame mailbox: a few may be dropped, never more than sent
    assert len(out["value"]) <= 20


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX named pipes and ptys")
def test_fifo_writer_that_stalls_is_lost_after_timeout(tmp_path):
    import os
    import threading

    fifo = tmp_path / "cam.fifo"
    os.mkfifo(fifo)
    data = _ts_bytes(20)
    release = threading.Event()

    def writer():
        with open(fifo, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            release.wait(20)  # keeps the pipe open, sends nothing more

    threading.Thread(target=writer, daemon=True).start()
    try:
        t0 = time.monotonic()
        def read_all():
            r = open_live(fifo, fps=None, timeout=1.0)
            return list(r), r

        done, out = _in_thread(read_all, limit=15)
        elapsed = time.monotonic() - t0
    finally:
        release.set()
    assert done and "error" not in out, out
    frames, r = out["value"]
    assert len(frames) >= 1 and r.stats.lost and "no data for 1s" in r.end_reason
    assert elapsed < 8


def test_lost_flag_tells_a_failure_from_an_end(procs, short_clip):
    r = open_live(short_clip, realtime=True, fps=5)
    list(r)
    assert r.end_reason == "end of file" and not r.stats.lost
    p, port = start_sender("tcp", 20, 20, "stall")
    procs.append(p)
    r = open_live(f"tcp://127.0.0.1:{port}", fps=None, timeout=1.0, retry_for=0.3)
    list(r)
    assert r.stats.lost and "no data" in r.end_reason


def test_close_returns_within_its_wait_on_a_stalled_source(procs):
    p, port = start_sender("tcp", 40, 20, "stall")  # 2 s of video, then silence
    procs.append(p)
    r = open_live(f"tcp://127.0.0.1:{port}", fps=None, timeout=6.0, retry_for=0.0)
    next(iter(r))
    time.sleep(2.5)  # the sender has gone quiet: the capture thread is inside a read (up to 6 s)
    t0 = time.monotonic()
    r.close(wait=0.5)
    assert time.monotonic() - t0 < 1.5
    t0 = time.monotonic()
    rest = list(r)  # a closed reader's iteration ends at once (at most the frame already in the mailbox)
    assert len(rest) <= 1 and time.monotonic() - t0 < 1.0
