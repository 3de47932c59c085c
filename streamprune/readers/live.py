"""Frames from live sources: webcams, rtsp/udp/tcp/http/... URLs, and files replayed at real time.

A background thread captures and decodes; frames are sampled by source time at the requested fps into a
one-slot mailbox; the consumer always gets the newest sampled frame (colour conversion happens only for
frames handed out). A sampled frame replaced before the consumer took it counts as dropped. When the
source stalls or disconnects the thread reconnects with backoff for `retry_for` seconds, then the
iteration ends; the reason is in `.end_reason` (and `.stats.end_reason`) and is logged.
"""

from __future__ import annotations

import errno
import os
import select
import stat
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from .base import Frame, ReaderError, StreamSampler, check_sampling, log, one_line, quarter_turns, size_callback, to_rgb

_RETRY_FIRST, _RETRY_MAX = 0.25, 4.0  # reconnect backoff (seconds)


@dataclass
class LiveStats:
    source_fps: float = 0.0  # measured rate of captured frames (source time)
    delivered: int = 0  # frames handed to the consumer
    dropped: int = 0  # sampled frames replaced by a newer one before the consumer took them
    reconnects: int = 0
    captured: int = 0  # frames decoded from the source
    end_reason: str | None = None  # why the iteration ended (None while running)
    lost: bool = False  # ended by a failure (stall, read error) rather than its end or close()


@dataclass(frozen=True)
class _Target:
    url: str
    format: str | None
    options: dict
    kind: str  # "webcam", "url", "file"
    label: str
    fifo: bool = False  # a named pipe (kind "file"): opened without blocking, waits for a writer


def _resolve(source, options) -> _Target:
    """Webcam index / device path / URL / file path -> what av.open needs."""
    s = str(source).strip() if not isinstance(source, os.PathLike) else os.fspath(source)
    opts = dict(options or {})
    if s.isdigit() or s.startswith("/dev/video"):
        dev = f"/dev/video{s}" if s.isdigit() else s
        if sys.platform.startswith("linux"):
            if not os.path.exists(dev):
                raise ReaderError(f"no webcam at {dev} (no such device)")
            return _Target(dev, "video4linux2", opts, "webcam", dev)
        if sys.platform == "darwin" and s.isdigit():
            return _Target(f"{s}:none", "avfoundation", opts, "webcam", f"webcam {s}")
        raise ReaderError(f"webcam {s!r}: give the device as a URL or path for this platform ({sys.platform})")
    if "://" in s and not s.startswith("file://"):
        scheme = s.split("://", 1)[0].lower()
        if scheme in ("rtsp", "rtsps"):
            opts.setdefault("rtsp_transport", "tcp")
        opts.setdefault("fflags", "nobuffer")  # frames read while probing are dropped: they are stale
        opts.setdefault("analyzeduration", "1000000")  # probe for 1 s at most (default 5 s)
        return _Target(s, None, opts, "url", s.split("?", 1)[0])
    p = Path(s[len("file://"):] if s.startswith("file://") else s).expanduser()
    if not p.exists():
        raise ReaderError(f"no such file: {p}")
    if p.is_dir():
        raise ReaderError(f"is a directory, not a video file: {p}")
    return _Target(str(p), None, opts, "file", p.name, fifo=is_fifo(p))


def check_live_source(source) -> None:
    """What can be checked without opening: a webcam device that exists, a file or named pipe that exists
    (not a folder); ReaderError otherwise. A URL is only checked by opening it."""
    _resolve(source, None)


def is_fifo(path) -> bool:
    """True for a named pipe (or /dev/stdin on a pipe); False for anything else, an int webcam index included."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except (OSError, TypeError, ValueError):
        return False


def _wait_for_writer(target: _Target, timeout: float, said: float) -> int:
    """Open a FIFO without blocking and wait up to `timeout` s for a writer's first bytes; the fd (still
    non-blocking, so that PyAV's read timeout applies to stalls too) or ReaderError."""
    try:
        fd = os.open(target.url, os.O_RDONLY | os.O_NONBLOCK)  # never blocks, writer or not
    except OSError as e:
        raise ReaderError(f"cannot open {target.label}: {one_line(e)}") from None
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        events = poller.poll(max(timeout, 0.0) * 1000)  # Linux: no POLLHUP before a writer came
        if not events:
            raise ReaderError(f"{target.label}: no writer within {said:g}s (a named pipe nobody writes to)")
        if not events[0][1] & select.POLLIN:
            raise ReaderError(f"{target.label}: the writer closed the named pipe without sending data")
    except BaseException:
        os.close(fd)
        raise
    return fd


class _Source:
    """An open container and, for a named pipe, the file descriptor under it (closed after the container)."""

    def __init__(self, container, fd: int | None = None):
        self.container, self.fd = container, fd

    def close(self) -> None:
        try:
            if self.container is not None:
                self.container.close()
        finally:
            self.container = None
            if self.fd is not None:
                fd, self.fd = self.fd, None
                os.close(fd)


def _open(target: _Target, timeout: float, said: float | None = None) -> _Source:
    """av.open with bounded waiting (a named pipe included); ReaderError (one line) on failure. `said`: the
    timeout the messages name (the caller's whole budget; `timeout` may be what is left of it)."""
    import av

    said = timeout if said is None else said
    fd = _wait_for_writer(target, timeout, said) if target.fifo else None
    url = target.url if fd is None else f"pipe:{fd}"
    try:
        c = av.open(url, format=target.format, options=target.options, timeout=(timeout, timeout),
                    metadata_errors="ignore")
    except BaseException as e:
        if fd is not None:
            os.close(fd)
        if isinstance(e, av.error.ExitError):
            raise ReaderError(f"{target.label}: no answer within {said:g}s") from None
        if isinstance(e, (av.error.FFmpegError, OSError, ValueError)):
            raise ReaderError(f"cannot open {target.label}: {one_line(e)}") from None
        raise
    src = _Source(c, fd)
    if not c.streams.video:
        src.close()
        raise ReaderError(f"{target.label} has no video stream")
    return src


def _refused(e: ReaderError) -> bool:
    msg = str(e)
    return "refused" in msg.lower() or f"[Errno {errno.ECONNREFUSED}]" in msg


class LiveReader:
    """Iterable of Frame from a live source (see module docstring); `.stats`, `.end_reason`, `.close()`."""

    def __init__(self, source, *, fps=1.0, realtime=False, timeout=10.0, retry_for=30.0, max_side=None, size=None,
                 options=None):
        check_sampling(fps, None, None, None)
        if not timeout or timeout <= 0:
            raise ReaderError(f"timeout must be positive, got {timeout!r}")
        if retry_for is None or retry_for < 0:
            raise ReaderError(f"retry_for must be >= 0, got {retry_for!r}")
        self.target = _resolve(source, options)
        if self.target.kind == "file" and not realtime:
            log.info("%s: a file read through open_live is replayed at real time", self.target.label)
        self.fps, self.timeout, self.retry_for = fps, float(timeout), float(retry_for)
        self.size_fn = size_callback(max_side, size)
        self.stats = LiveStats()
        self._cv = threading.Condition()
        self._slot = None  # (av.VideoFrame, time, index) of the newest sampled frame not yet delivered
        self._stop = threading.Event()
        self._ended = False
        self._container = self._open_first()
        self._thread = threading.Thread(target=self._run, name=f"streamprune-live:{self.target.label}", daemon=True)
        self._thread.start()

    @property
    def end_reason(self) -> str | None:
        return self.stats.end_reason

    # ------------------------------------------------------------------ capture thread
    def _open_first(self):
        """Open within `timeout` seconds; a refused connection is retried until then (the sender may be
        starting)."""
        deadline = time.monotonic() + self.timeout
        delay = 0.05
        while True:
            left = deadline - time.monotonic()
            try:
                return _open(self.target, max(left, 0.1), self.timeout)
            except ReaderError as e:
                if self.target.kind != "url" or not _refused(e) or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _run(self) -> None:
        src, reason, lost = self._container, "stopped", False
        sampler = StreamSampler(self.fps)
        wall0 = None  # monotonic time of the first frame
        offset = 0.0  # source-time offset of the current connection
        t0 = None  # pts time of the first frame of the current connection
        last_t = -1.0
        try:
            while not self._stop.is_set():
                c = src.container
                try:
                    stream = c.streams.video[0]
                    stream.thread_type = "AUTO"
                    for frame in c.decode(stream):
                        if self._stop.is_set():
                            break
                        now = time.monotonic()
                        if wall0 is None:
                            wall0 = now
                        pt = frame.time
                        if pt is None:
                            t = now - wall0
                        else:
                            if t0 is None:
                                t0 = pt
                                offset = 0.0 if last_t < 0 else max(now - wall0, last_t + 1e-3)
                            t = offset + (pt - t0)
                        if t <= last_t:  # timestamps must grow (a sender restart, a wrap)
                            t = last_t + 1e-3
                        if self.target.kind == "file":  # pace to wall clock
                            wait = wall0 + t - time.monotonic()
                            if wait > 0 and self._stop.wait(wait):
                                break
                        last_t = t
                        self._captured(frame, t, sampler)
                    reason, lost = ("end of file" if self.target.kind == "file" else "stream ended"), False
                except Exception as e:  # noqa: BLE001 - any read error: reconnect or end
                    stalled = type(e).__name__ == "ExitError"  # PyAV's read timeout fired
                    reason = f"no data for {self.timeout:g}s" if stalled else f"read error: {one_line(e)}"
                    lost = True  # a failure, not the source's own end (EOF)
                src.close()
                src = None
                if self._stop.is_set():
                    reason, lost = "closed", False
                    break
                if self.target.kind == "file":
                    break
                src = self._reconnect(reason)
                if src is None:
                    if self._stop.is_set():
                        reason, lost = "closed", False
                    else:
                        reason = f"{reason}; gave up after retrying for {self.retry_for:g}s"
                    break
                t0 = None
                with self._cv:
                    self.stats.reconnects += 1
                log.info("%s: reconnected (%d)", self.target.label, self.stats.reconnects)
        finally:
            if src is not None:
                src.close()
            with self._cv:
                self.stats.end_reason = reason
                self.stats.lost = lost
                self._ended = True
                self._cv.notify_all()
            if lost:
                log.warning("%s: live source lost: %s", self.target.label, reason)
            elif reason not in ("closed", "end of file"):
                log.info("%s: live source ended: %s", self.target.label, reason)

    def _captured(self, frame, t: float, sampler: StreamSampler) -> None:
        with self._cv:
            st = self.stats
            st.captured += 1
            if st.captured == 1:
                self._first_t = t
            elif t > self._first_t:
                st.source_fps = (st.captured - 1) / (t - self._first_t)
            if not sampler.keep(t):
                return
            if self._slot is not None:
                st.dropped += 1
            self._slot = (frame, t, st.captured - 1)
            self._cv.notify_all()

    def _reconnect(self, reason: str):
        log.warning("%s: %s; reconnecting for up to %gs", self.target.label, reason, self.retry_for)
        deadline = time.monotonic() + self.retry_for
        delay = _RETRY_FIRST
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                return _open(self.target, min(self.timeout, max(left, 0.1)))
            except ReaderError as e:
                log.debug("%s: reconnect failed: %s", self.target.label, e)
            if self._stop.wait(min(delay, max(deadline - time.monotonic(), 0))):
                return None
            delay = min(delay * 2, _RETRY_MAX)
        return None

    # ------------------------------------------------------------------ consumer
    def __iter__(self) -> Iterator[Frame]:
        return self

    def __next__(self) -> Frame:
        with self._cv:
            while self._slot is None and not self._ended and not self._stop.is_set():
                self._cv.wait(0.5)
            if self._slot is None:
                raise StopIteration
            frame, t, index = self._slot
            self._slot = None
            self.stats.delivered += 1
        return Frame(t, index, to_rgb(frame, self.size_fn, quarter_turns(frame.rotation)))

    def snapshot(self) -> LiveStats:
        with self._cv:
            return replace(self.stats)

    def close(self, wait: float | None = None) -> None:
        """Stop capturing; waits at most `wait` s (default `timeout` + 1 s) for a blocked read to give up.

        Safe from any thread: the capture thread closes the source itself, so a read in progress is never
        pulled from under it (a wait that expires leaves it to finish on its own)."""
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(self.timeout + 1.0 if wait is None else max(wait, 0.0))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self._stop.set()
        except Exception:  # noqa: BLE001
            pass


def open_live(source, *, fps=1.0, realtime=False, timeout=10.0, retry_for=30.0, max_side=None, size=None,
              options=None) -> LiveReader:
    """Open a webcam index ("0") / device path, a stream URL, or a file replayed at real time.

    Iterating yields the newest frame at `fps` (None: every frame); opening raises ReaderError within about
    `timeout` seconds; a lost source is retried for `retry_for` seconds, then the iteration ends."""
    return LiveReader(source, fps=fps, realtime=realtime, timeout=timeout, retry_for=retry_for, max_side=max_side,
                      size=size, options=options)
