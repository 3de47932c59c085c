"""Cheap checks before work starts: the question, the video path, the contact-sheet path, the video's header
(probe_video), frames handed to Pipeline.push_frames (as_frames), and whether a memory fits the device.

Each failure is a one-line ValueError (ReaderError for paths and files), raised before a model loads or a
frame is encoded.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterator

import numpy as np
import torch

from .config import AskConfig


def check_question(question) -> str:
    """The question, or ValueError when it is not a non-empty string."""
    if not isinstance(question, str) or not question.strip():
        raise ValueError("question must be a non-empty string" + ("" if isinstance(question, str) else
                                                                  f", got {type(question).__name__}"))
    return question


def check_video_path(video) -> str:
    """The path of an existing, non-empty, readable regular file (a folder, device, FIFO or socket is refused
    here, before a reader could block on it); ReaderError (a ValueError) with the reason otherwise."""
    from .readers import ReaderError
    from .readers.base import check_file

    try:
        path = os.fsdecode(os.fspath(video))
    except TypeError:
        raise ReaderError(f"video must be a file path, got {type(video).__name__}") from None
    if not path:
        raise ReaderError("video path is empty")
    return str(check_file(path))


def check_save_kept(path) -> str:
    """A .png path in an existing folder (for save_kept), or ValueError."""
    p = os.fsdecode(os.fspath(path))
    d = os.path.dirname(os.path.abspath(p))
    if not p.lower().endswith(".png") or not os.path.isdir(d):
        raise ValueError(f"save_kept needs a .png path in an existing folder, got {p}")
    return p


def probe_video(path, config: AskConfig):
    """Open the video and read its header (no frame decoded) with the config's sampling: a corrupt or
    unsupported file fails here, before any model loads. Returns the reader's VideoInfo."""
    from .readers import open_video

    with open_video(str(path), fps=config.fps, max_frames=config.max_frames) as reader:
        return getattr(reader, "info", None)


def available_bytes(device) -> int | None:
    """Memory free for new tensors on `device`: CUDA free + torch's cached blocks; CPU: MemAvailable
    (bounded by the cgroup limit when there is one); None when unknown (other devices)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(dev)
            return int(free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev))
        except (RuntimeError, AssertionError):
            return None
    if dev.type != "cpu":
        return None
    have = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    have = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if have is None:
        try:
            have = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    try:  # cgroup v2: a container's limit can be far below the host's MemAvailable
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit != "max":
            with open("/sys/fs/cgroup/memory.current") as f:
                have = min(have, int(limit) - int(f.read().strip()))
    except (OSError, ValueError):
        pass
    return max(0, have)


def payload_width(adapter) -> int:
    """Float columns of a token's payload (Qwen3-VL carries its deepstack features)."""
    if getattr(adapter, "family", "") == "qwen3_vl":
        vc = getattr(getattr(adapter, "config", None), "vision_config", None)
        return 6 + len(getattr(vc, "deepstack_visual_indexes", None) or ()) * int(adapter.hidden_size)
    return 6


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def check_memory_fits(config: AskConfig, adapter) -> None:
    """Refuse a memory the adapter's device cannot hold once full (selector.memory_bytes: tokens x hidden
    size x 4 bytes, plus bases and payload) with the reason and the largest memory that would fit."""
    from .select import memory_bytes

    d = getattr(adapter, "hidden_size", None)
    if not isinstance(d, int) or d <= 0:
        return
    device = getattr(adapter, "device", None)
    kw = dict(payload_width=payload_width(adapter), recycle=bool(config.selector_kw.get("recycle")))
    need = memory_bytes(config.memory, d, **kw)
    have = available_bytes(device)
    if have is None or need <= have:
        return
    lo, hi = 0, config.memory  # the largest memory that fits: bisection on the estimate
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if memory_bytes(mid, d, **kw) <= have else (lo, mid - 1)
    raise ValueError(f"a memory of {config.memory} tokens at hidden size {d} needs about {_gib(need)}, but "
                     f"{device or 'cpu'} has {_gib(have)} available; use a memory (and budget) of at most {lo} tokens")


def iter_frames(frames, times=None, *, first_index: int = 0) -> Iterator:
    """Frames for Pipeline.push_frames, as Frame-like objects (.time, .index, .image (H, W, 3) uint8).

    `frames` is an iterable of readers.Frame (times=None; checked and passed on one by one, so a reader can be
    streamed), or (H, W, 3) uint8 numpy arrays -- a list, or one (T, H, W, 3) array -- with `times` (T,)
    seconds (one number for a single (H, W, 3) array), all checked before the first is passed on; array frames
    are numbered from `first_index`. Anything else (a wrong shape or dtype, a missing or non-finite time,
    counts that differ) is a one-line ValueError."""
    from .readers.base import Frame

    if isinstance(frames, np.ndarray):
        if frames.ndim == 3:
            frames = [frames]
        elif frames.ndim != 4:
            raise ValueError(f"frames must be (H, W, 3) uint8 arrays, got an array of shape {frames.shape}")
    if times is None:
        return _checked(frames)
    images = list(frames)
    times = times.tolist() if hasattr(times, "tolist") else times  # numpy / torch: Python numbers
    times = [times] if isinstance(times, numbers.Real) else list(times)
    if len(times) != len(images):
        raise ValueError(f"{len(images)} frames but {len(times)} times")
    out = []
    for i, (img, t) in enumerate(zip(images, times)):
        _check_image(img, i)
        out.append(Frame(time=_check_time(t, i), index=first_index + i, image=img))
    return iter(out)


def _checked(frames) -> Iterator:
    for i, fr in enumerate(frames):
        if isinstance(fr, np.ndarray):
            raise ValueError("numpy frames need their times: push_frames(frames, times=[seconds, ...])")
        if not all(hasattr(fr, a) for a in ("time", "index", "image")):
            raise ValueError(f"frame {i}: expected a Frame or an (H, W, 3) uint8 array, got {type(fr).__name__}")
        _check_image(fr.image, i)
        _check_time(fr.time, i)
        yield fr


def _check_image(img, i: int) -> None:
    if not isinstance(img, np.ndarray):
        raise ValueError(f"frame {i}: expected an (H, W, 3) uint8 numpy array, got {type(img).__name__}")
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1 or img.dtype != np.uint8:
        raise ValueError(f"frame {i}: expected an (H, W, 3) uint8 array, got shape {img.shape} {img.dtype}")


def _check_time(t, i: int) -> float:
    ok = isinstance(t, numbers.Real) and not isinstance(t, bool) and math.isfinite(t)
    if not ok:
        raise ValueError(f"frame {i}: time must be a finite number of seconds, got {t!r}")
    return float(t)
