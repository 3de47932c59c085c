"""Shared reader types and small pure helpers: Frame, ReaderError, frame sampling, RGB conversion."""

from __future__ import annotations

import ctypes
import logging
import math
import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("streamprune.readers")

SizeFn = Callable[[int, int], tuple[int, int]]  # (height, width) -> (height, width), display orientation


_MALLOC_TUNED = False


def tune_malloc(*, apply: bool = False) -> bool:
    """Whether glibc's allocator is tuned to keep freed frame-sized buffers in the heap; with apply=True, tune
    it first (glibc only; once per process). Library code never applies it: the CLI does, when asked
    (`--tune-malloc`, or STREAMPRUNE_MALLOPT=1), and benches that measure it; without `apply` this only reports.

    A consumer that holds frame N while frame N+1 is converted makes glibc return the ~3 MB buffers to
    the OS and fault them back in for every frame (+30-40% CPU at 720p). Raising the trim threshold to
    256 MB and pinning the mmap threshold at 32 MB (glibc's own dynamic maximum) avoids that. The tuning is
    process-wide (every later allocation of the process follows it)."""
    global _MALLOC_TUNED
    if not apply or _MALLOC_TUNED or not sys.platform.startswith("linux"):
        return _MALLOC_TUNED
    _MALLOC_TUNED = True
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 256 << 20)
    except (OSError, AttributeError):  # not glibc
        _MALLOC_TUNED = False
    return _MALLOC_TUNED


class ReaderError(ValueError):
    """A source that cannot be read; the message is one line (the CLI prints it and exits 2)."""


def check_file(path) -> Path:
    """The path of a readable, non-empty regular file, or a one-line ReaderError that says what it is instead
    (no such file, a directory, a FIFO / device / socket, empty, unreadable)."""
    p = Path(os.fspath(path)).expanduser()
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ReaderError(f"no such file: {p}") from None
    except NotADirectoryError:
        raise ReaderError(f"no such file: {p} (a parent is not a directory)") from None
    except OSError as e:
        raise ReaderError(f"cannot access {p}: {e.strerror or one_line(e)}") from None
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        raise ReaderError(f"{p} is a directory, not a video file")
    if not stat.S_ISREG(mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
                else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "special")
        raise ReaderError(f"{p} is not a regular file ({kind}); give a video file, or a stream to `live`")
    if st.st_size == 0:
        raise ReaderError(f"{p} is empty (0 bytes)")
    if not os.access(p, os.R_OK):
        raise ReaderError(f"{p} is not readable (permission denied)")
    return p


@dataclass(frozen=True)
class Frame:
    time: float  # seconds from the start of the source (file: stream pts; live: since the first frame)
    index: int  # file: frame number in presentation order; live: running count of captured frames
    image: np.ndarray  # (H, W, 3) uint8 RGB


def one_line(e: BaseException) -> str:
    """The first line of an exception's message (or its type name)."""
    msg = str(e).strip().splitlines()
    return msg[0] if msg else type(e).__name__


def check_sampling(fps, max_frames, start, end) -> None:
    """Raise ReaderError on nonsensical sampling arguments."""
    if fps is not None and not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ReaderError(f"fps must be a positive number, got {fps!r}")
    if max_frames is not None and (not isinstance(max_frames, (int, np.integer)) or max_frames < 1):
        raise ReaderError(f"max_frames must be a positive integer, got {max_frames!r}")
    for name, v in (("start", start), ("end", end)):
        if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ReaderError(f"{name} must be a non-negative number of seconds, got {v!r}")
    if start is not None and end is not None and end <= start:
        raise ReaderError(f"end ({end}) must be after start ({start})")


def _nearest(t: np.ndarray, ticks: np.ndarray) -> np.ndarray:
    """Index of the frame nearest to each tick (ties: the earlier frame); t sorted."""
    right = np.clip(np.searchsorted(t, ticks, side="left"), 0, len(t) - 1)
    left = np.clip(right - 1, 0, len(t) - 1)
    return np.where(np.abs(t[left] - ticks) <= np.abs(t[right] - ticks), left, right)


def _tick_picks(t: np.ndarray, t0: float, fps: float, eps: float) -> np.ndarray:
    """Unique nearest frames of the ticks t0 + k / fps, k = 0 .. floor((t[-1] - t0) * fps); memory O(len(t)).

    The tick grid is never built when it is longer than the frames: the nearest frame is monotone in the
    tick, so the ticks that pick frame m are a run starting at the first tick past the midpoint between
    frames m-1 and m; that tick (found by arithmetic, checked with its neighbours against the exact rule)
    is the only one that matters. Same picks as the dense grid."""
    span = (t[-1] - t0) * fps
    mid = (t[:-1] + t[1:]) / 2  # (n-1,) cell boundaries: ticks in (mid[m-1], mid[m]] pick frame m
    if not span < 2**52:  # ticks denser than float resolution: every frame whose cell is not empty
        cells = np.concatenate([[-np.inf], mid]) < np.concatenate([mid, [np.inf]])
        return np.flatnonzero(cells)
    n_ticks = max(1, math.floor(span + eps) + 1)  # >= 1: t is not empty
    if n_ticks <= 4 * len(t) + 64:  # a short grid: build it
        return np.unique(_nearest(t, t0 + np.arange(n_ticks) / fps))
    first = np.ceil((mid - t0) * fps)  # (n-1,) about the first tick index of each later frame's cell
    k = np.concatenate([[0.0, float(n_ticks - 1)], (first[:, None] + np.arange(-1, 2)).ravel()])
    k = np.unique(np.clip(k, 0, n_ticks - 1).astype(np.int64))  # (<= 3n + 2,)
    return np.unique(_nearest(t, t0 + k / fps))


def select_frames(times: np.ndarray, *, fps=None, max_frames=None, start=None, end=None) -> np.ndarray:
    """Indices (ascending, unique) of the frames to keep among frames at sorted `times` (seconds).

    Range [start, end); `fps`: for each tick start0 + k / fps the nearest frame (ties: the earlier), at most
    one pick per frame, in memory bounded by the frames whatever the fps; `max_frames`: at most that many of
    the remaining frames, spread uniformly (centre of equal bins)."""
    times = np.asarray(times, dtype=np.float64)  # (n,)
    eps = 1e-6
    lo = np.searchsorted(times, (start or 0.0) - eps, side="left")
    hi = len(times) if end is None else np.searchsorted(times, end - eps, side="left")
    idx = np.arange(lo, hi)  # (m,)
    if len(idx) == 0:
        return idx
    if fps is not None:
        t = times[lo:hi]
        t0 = t[0] if start is None else float(start)
        idx = lo + _tick_picks(t, t0, float(fps), eps)
    if max_frames is not None and len(idx) > max_frames:
        idx = idx[((np.arange(max_frames) + 0.5) * len(idx) / max_frames).astype(np.int64)]
    return idx


class StreamSampler:
    """Online version of `select_frames` for sources read once: feed frame times in order; True = keep.

    Keeps the first frame at or after each tick (within `tol` seconds), at most one frame per tick."""

    def __init__(self, fps=None, *, start=None, end=None, tol=1e-3):
        self.step = None if fps is None else 1.0 / fps
        self.start, self.end, self.tol = start, end, tol
        self.next_tick = None if start is None else float(start)

    def done(self, t: float) -> bool:
        return self.end is not None and t >= self.end - 1e-6

    def keep(self, t: float) -> bool:
        if self.start is not None and t < self.start - 1e-6:
            return False
        if self.done(t):
            return False
        if self.step is None:
            return True
        if self.next_tick is None:
            self.next_tick = t
        if t < self.next_tick - self.tol:
            return False
        k = (t + self.tol - self.next_tick) / self.step  # ticks covered by this frame, minus one
        if k < 2**52:
            self.next_tick += (math.floor(k) + 1) * self.step
        else:  # a tick grid finer than float resolution (any fps works): the next frame is due
            self.next_tick = t + self.tol + self.step
        return True


def fit_max_side(max_side: int) -> SizeFn:
    """Size callback: shrink (never enlarge) so that the longer side is at most `max_side`."""
    if not isinstance(max_side, (int, np.integer)) or max_side < 1:
        raise ReaderError(f"max_side must be a positive integer, got {max_side!r}")

    def fn(h: int, w: int) -> tuple[int, int]:
        s = max_side / max(h, w)
        if s >= 1:
            return h, w
        return max(1, round(h * s)), max(1, round(w * s))

    return fn


def size_callback(max_side=None, size=None) -> SizeFn | None:
    if max_side is not None and size is not None:
        raise ReaderError("give either max_side or size, not both")
    if size is not None and not callable(size):
        raise ReaderError("size must be a callable (height, width) -> (height, width)")
    return fit_max_side(max_side) if max_side is not None else size


def quarter_turns(rotation) -> int:
    """Counter-clockwise display rotation in degrees -> number of quarter turns (0..3)."""
    if not rotation:
        return 0
    k = round(rotation / 90.0)
    if abs(rotation - 90.0 * k) > 1.0:
        log.warning("rotation of %.1f degrees is not a multiple of 90; ignored", rotation)
        return 0
    return k % 4


def to_rgb(frame, size_fn: SizeFn | None = None, turns: int | None = None, interpolation="AREA") -> np.ndarray:
    """av.VideoFrame (any pixel format) -> (H, W, 3) uint8 RGB in display orientation, optionally resized.

    Scaling and colour conversion happen in one swscale pass; rotation is a numpy quarter turn."""
    if turns is None:
        turns = quarter_turns(getattr(frame, "rotation", 0))
    h, w = frame.height, frame.width
    dh, dw = (w, h) if turns % 2 else (h, w)  # display size
    if size_fn is not None:
        th, tw = size_fn(dh, dw)
        if th < 1 or tw < 1:
            raise ReaderError(f"size callback returned an empty size {th}x{tw}")
        if (th, tw) != (dh, dw):
            h, w = (tw, th) if turns % 2 else (th, tw)
    if (h, w) == (frame.height, frame.width):
        img = frame.to_ndarray(format="rgb24")  # (h, w, 3)
    else:
        img = frame.reformat(width=w, height=h, format="rgb24", interpolation=interpolation).to_ndarray()
    if turns:
        img = np.ascontiguousarray(np.rot90(img, k=turns))
    return img
