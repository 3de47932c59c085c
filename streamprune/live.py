"""Watch a live source (webcam, RTSP/UDP/TCP/HTTP stream, or a file) and answer questions while watching.

Three threads: capture (the reader; frames are dropped, not queued, when the worker is behind), the worker
(encode + select + answer: the selector is touched by this thread only), and optionally stdin (questions
typed at the prompt). The memory stays at its fixed size however long the stream runs. Each answer uses
the memory as it is at that moment and says which stream time span it covers.

Shutdown is ordered: stop() signals, wakes a live reader (whose own thread closes its source), joins the
capture thread, and only then closes a file reader (never while the capture thread is inside it).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .config import AskConfig
from .memprobe import rss_mb
from .pipeline import Pipeline, decode_size
from .readers.base import one_line

log = logging.getLogger(__name__)

_END = object()


def parse_questions(text: str) -> list[tuple[float, str]]:
    """Lines `SECONDS<TAB>question` (blank lines and lines starting with # skipped), sorted by time."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        sec, sep, q = line.partition("\t")
        try:
            t = float(sec)
        except ValueError:
            t = float("nan")
        if not sep or not q.strip() or not t >= 0:
            raise ValueError(f"questions line {n}: expected SECONDS<TAB>question, got {line.strip()[:60]!r}")
        out.append((t, q.strip()))
    return sorted(out, key=lambda x: x[0])


@dataclass
class LiveStats:
    started: float = field(default_factory=time.perf_counter)
    captured: int = 0             # frames delivered by the reader
    processed: int = 0            # frames encoded + selected
    dropped: int = 0              # frames dropped (the live reader's own drops + the worker's queue's)
    source_fps: float = 0.0
    stream_time: float = 0.0      # time stamp of the last processed frame
    tokens_seen: int = 0
    tokens_kept: int = 0
    memory_mb: float = 0.0        # resident memory of the process
    last_latency: float | None = None
    answers: int = 0
    reconnects: int = 0
    block_times: list = field(default_factory=list)  # (wall s, this thread's CPU s) per block (encode + select)
    end_reason: str | None = None  # "end of file", "stream ended", "interrupted", "end of input", "stopped",
    #                                "read error: ...", a live reader's reason ("no data for 10s; gave up ...")
    lost: bool = False            # the source failed before its end (stall, read error, reconnects gave up)
    interrupted: bool = False     # Ctrl-C (KeyboardInterrupt) ended run()

    @property
    def processed_fps(self) -> float:
        dt = time.perf_counter() - self.started
        return self.processed / dt if dt > 0 else 0.0


class LiveSession:
    """Capture -> (drop when behind) -> encode + select -> answers, until the stream ends or stop()."""

    def __init__(self, adapter, config: AskConfig, source, *, realtime: bool = False,
                 questions: list[tuple[float, str]] | None = None, on_answer: Callable[[dict], None] | None = None,
                 retry_for: float = 30.0, timeout: float = 10.0, queue_frames: int | None = None,
                 keep_block_times: bool = False):
        self.pipe = Pipeline(adapter, config)
        self.source, self.realtime, self.retry_for, self.timeout = source, realtime, retry_for, timeout
        self.scripted = list(questions or [])
        self.on_answer = on_answer or (lambda a: None)
        self.asked: queue.Queue = queue.Queue()       # interactive questions
        fpb = max(1, int(getattr(adapter, "frames_per_block", 1)))
        self.frames: queue.Queue = queue.Queue(maxsize=queue_frames or 2 * fpb)
        self.stats = LiveStats()
        self.keep_block_times = keep_block_times
        self.stop_event = threading.Event()
        self._finish = threading.Event()  # end as if the source ended (Ctrl-D at the prompt)
        self.error: BaseException | None = None
        self.reader = None
        self._capture_thread: threading.Thread | None = None
        self._close_lock = threading.Lock()
        self._reader_closed = False
        self._source_ended = False  # the capture thread reached the end of the reader's iteration
        self.opened = False  # the source was opened and capture started (run())
        self.live = False
        self.dropped_here = 0  # frames the worker was too slow for (the live reader counts its own)

    # -- threads
    def _open(self):
        from .readers import is_live_source, open_live, open_source
        from .readers.live import is_fifo

        cfg = self.pipe.config
        kw = dict(fps=cfg.fps, realtime=self.realtime, size=decode_size(self.pipe.adapter, cfg.decode_headroom))
        if self.realtime or is_live_source(self.source) or is_fifo(self.source):  # open_live's reconnect options
            kw.update(timeout=self.timeout, retry_for=self.retry_for)
        if is_fifo(self.source):  # a named pipe is live: read once, waiting at most `timeout` for a writer
            return open_live(self.source, **{**kw, "realtime": True})
        return open_source(self.source, **kw)

    def _close_reader(self, wait: float | None = None) -> None:
        """Close the reader once. Called by the capture thread when it ends (it owns the reader), or by stop()
        once that thread is gone; a live reader's close() is thread-safe and only waits `wait` s."""
        with self._close_lock:
            if self._reader_closed or self.reader is None:
                return
            self._reader_closed = True
        reader = self.reader
        try:
            if hasattr(reader, "stats"):  # LiveReader
                reader.close(wait=wait)
            else:
                reader.close()
        except Exception:  # noqa: BLE001
            log.debug("reader close failed", exc_info=True)

    def _capture(self) -> None:
        try:
            reader = self.reader
            self.live = hasattr(reader, "stats")
            for fr in reader:
                if self.stop_event.is_set():
                    break
                self.stats.captured += 1
                st = getattr(reader, "stats", None)
                if st is not None:
                    self.stats.source_fps = float(getattr(st, "source_fps", 0.0) or 0.0)
                    self.stats.reconnects = int(getattr(st, "reconnects", 0) or 0)
                if self.live:  # live: never fall behind, drop instead
                    try:
                        self.frames.put_nowait(fr)
                    except queue.Full:
                        self.dropped_here += 1
                else:  # a file replayed as fast as possible: the worker sets the pace
                    while not self.stop_event.is_set():
                        try:
                            self.frames.put(fr, timeout=0.1)
                            break
                        except queue.Full:
                            continue
            else:
                self._source_ended = not self.stop_event.is_set()
        except Exception as e:  # noqa: BLE001 - reported by run()
            if not self.stop_event.is_set():
                self.error = e
        finally:
            self._close_reader(wait=2.0)  # this thread owns the reader: nobody else is inside it
            while True:  # the worker may be gone (stopped): never block on a full queue
                try:
                    self.frames.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    if self.stop_event.is_set():
                        break

    def _stdin(self) -> None:
        """Questions typed at the prompt. End of input on a terminal (Ctrl-D) ends the session like the end of
        the stream; a pipe's end only ends the questions (the stream is watched to its end)."""
        import sys

        stream = sys.stdin
        if stream is None:
            return
        try:
            tty = stream.isatty()
            for line in stream:
                if self.stop_event.is_set():
                    return
                if line.strip():
                    self.asked.put(line.strip())
        except (OSError, ValueError):  # closed or unreadable stdin: no more questions
            return
        if tty and not self.stop_event.is_set():
            log.info("end of input: finishing")
            self.finish()

    def finish(self) -> None:
        """End as if the source had ended: pending questions are answered from the memory as it is."""
        self._finish.set()

    # -- answering
    def answer(self, question: str, asked_at: float | None = None, *, at_end: bool = False) -> dict:
        pipe = self.pipe
        t = time.perf_counter()
        if pipe.blocks == 0:
            pipe.flush()
        a = pipe.ask(question, flush=False)
        lat = time.perf_counter() - t
        self.stats.last_latency = lat
        self.stats.answers += 1
        return {
            "time": round(self.stats.stream_time if asked_at is None else asked_at, 3),
            "stream_time": round(self.stats.stream_time, 3),
            "question": question, "answer": a.text, "span": [round(x, 3) for x in a.span],
            "kept_span": [round(x, 3) for x in a.kept_span], "tokens_seen": a.tokens_seen,
            "tokens_kept": a.tokens_kept, "tokens_to_llm": a.tokens_to_llm, "latency_s": round(lat, 4),
            "ttft_s": round(a.timings["ttft"], 4), "at_end": at_end,
        }

    def _emit(self, question: str, asked_at: float | None, at_end: bool = False) -> None:
        try:
            self.on_answer(self.answer(question, asked_at, at_end=at_end))
        except ValueError as e:
            self.on_answer({"time": asked_at, "question": question, "error": str(e)})

    def _due(self, now: float) -> None:
        while self.scripted and self.scripted[0][0] <= now and self.pipe.blocks > 0:
            t, q = self.scripted.pop(0)
            self._emit(q, t)
        while not self.asked.empty() and self.pipe.blocks > 0:
            self._emit(self.asked.get_nowait(), None)

    def _worker(self, status: Callable[[LiveStats], None] | None) -> None:
        pipe = self.pipe
        while not self.stop_event.is_set() and not self._finish.is_set():
            try:
                fr = self.frames.get(timeout=0.2)
            except queue.Empty:
                self._due(self.stats.stream_time)
                if status:
                    status(self.refresh())
                continue
            if fr is _END:
                break
            # a scripted question is asked when the stream reaches its time, before that frame is added
            self._due(fr.time)
            t, c = time.perf_counter(), time.thread_time()
            blocks = pipe.blocks
            pipe.push_frames([fr])
            if pipe.blocks > blocks and self.keep_block_times:
                self.stats.block_times.append((time.perf_counter() - t, time.thread_time() - c))
            self.stats.processed += 1
            self.stats.stream_time = fr.time
            if status:
                status(self.refresh())
        if not self.stop_event.is_set():  # end of stream: remaining questions see the final memory
            pipe.flush()  # an odd tail frame (2-frame blocks) enters memory too
            for t, q in self.scripted:
                self._emit(q, t, at_end=True)
            self.scripted = []
            while not self.asked.empty():
                self._emit(self.asked.get_nowait(), None, at_end=True)

    def refresh(self) -> LiveStats:
        """The session stats, brought up to date (tokens seen / kept, RSS, frames dropped); safe to call any time."""
        s = self.stats
        s.tokens_seen = self.pipe.tokens_seen
        s.tokens_kept = self.pipe.selector.n_kept
        s.memory_mb = rss_mb()
        st = getattr(self.reader, "stats", None)
        s.dropped = self.dropped_here + (int(getattr(st, "dropped", 0) or 0) if st is not None else 0)
        return s

    # -- run
    def run(self, *, read_stdin: bool = False, status: Callable[[LiveStats], None] | None = None) -> LiveStats:
        """Block until the stream ends (or finish() / stop() / Ctrl-C); returns the final stats, whose
        `end_reason`, `lost` and `interrupted` say how it ended. An error of the worker (encode, select,
        answer) is raised after the ordered shutdown; a source that fails before any frame raises ValueError."""
        self.pipe.warm()
        self.reader = self._open()
        cap = threading.Thread(target=self._capture, name="streamprune-capture", daemon=True)
        self._capture_thread = cap
        cap.start()
        self.opened = True
        if read_stdin:
            threading.Thread(target=self._stdin, name="streamprune-stdin", daemon=True).start()
        try:
            self._worker(status)
        except KeyboardInterrupt:
            self.stats.interrupted = True
            self.stop_event.set()
        except BaseException as e:
            self.stats.end_reason = f"error: {one_line(e)}"
            raise
        finally:
            self.stop()
        s = self.refresh()
        if s.interrupted:
            s.end_reason = "interrupted"
        elif self._finish.is_set():
            s.end_reason = "end of input"
        elif self.error is not None:
            if s.processed == 0:
                raise self.error if isinstance(self.error, ValueError) else ValueError(one_line(self.error))
            s.end_reason, s.lost = f"read error: {one_line(self.error)}", True
        elif hasattr(self.reader, "stats") and self.reader.stats.end_reason not in (None, "closed"):
            s.end_reason, s.lost = self.reader.stats.end_reason, bool(getattr(self.reader.stats, "lost", False))
        else:
            s.end_reason = "end of file" if self._source_ended else "stopped"
        return s

    def stop(self, wait: float = 5.0) -> None:
        """Stop and close the source, in order: signal; wake a live reader (thread-safe close); join the capture
        thread (at most `wait` s); close the reader only once that thread is gone. Idempotent."""
        self.stop_event.set()
        cap = self._capture_thread
        if self.reader is None:
            return
        if cap is not None and cap.is_alive():
            if hasattr(self.reader, "stats"):  # LiveReader: thread-safe close (its own thread closes the container)
                self._close_reader(wait=min(wait, 2.0))  # wakes the capture thread waiting for a frame
            cap.join(wait)
            if cap.is_alive():  # still inside a read: it closes the reader itself when it returns
                log.warning("the capture thread did not stop within %gs; left to finish on its own", wait)
                return
        self._close_reader(wait=min(wait, 2.0))
