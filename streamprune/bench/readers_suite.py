"""Reader benchmark: streamprune's file reader vs plain PyAV (and decord where installed).

    streamprune bench --suite readers [--quick] [--opt minutes=10 --opt full_seconds=60] [--json out.json]

Synthesises (once, cached) a testsrc2 720p30 H.264 file with a keyframe every 10 s: a master encoded
with PyAV, remuxed N times end to end (closed GOPs, so the long file is a valid stream; bench.clips).
Units (each a row per reader):
- full_rate: frames/s on the master of `open_video` vs a plain PyAV loop (decode + rgb24 every frame);
- fps1: 1 fps on the long file: `open_video(fps=1)` vs decoding every frame (converting only the sampled
  ones), vs seeking to each sample (on the first `seek_targets` samples), vs decord's batch read;
- max_frames32: 32 frames spread over the long file (`max_frames=32`) vs decoding every frame.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from streamprune.readers import open_video
from streamprune.readers.base import tune_malloc

from .clips import remux_repeat, write_testsrc
from .protocol import Option, SuiteOptions, boolean, positive
from .report import markdown_rows
from .runner import Unit

SIZE, RATE, GOP_S = (1280, 720), 30, 10
_VERSION = 2
TITLE = "readers: streamprune's file reader vs plain PyAV / decord"
OPTIONS = (
    Option("minutes", positive(float), 10.0, "length of the long file (whole copies of the master)", quick_default=2.0),
    Option("full_seconds", positive(int), 60, "length of the master / full-rate test file", quick_default=20),
    Option("seek_targets", positive(int), 30, "samples timed for the seek-per-sample baseline", quick_default=10),
    Option("cache_dir", str, None, "where synthesised files are kept (default ~/.cache/streamprune)"),
    Option("decord", boolean, True, "include decord when installed"),
    Option("decode_all", boolean, True, "run the slow decode-every-frame baseline"),
    Option("tune_malloc", boolean, True, "tune glibc's allocator first (readers.base.tune_malloc; process-wide, "
                                         "so the plain PyAV baselines get it too)"),
)
TESTS = ("full_rate", "fps1", "max_frames32")


def cache_dir(base=None) -> Path:
    base = base or os.environ.get("STREAMPRUNE_CACHE")
    if base is None:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "streamprune"
    d = Path(base) / "bench-readers"
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError:
        d = Path(tempfile.gettempdir()) / "streamprune-bench-readers"
        d.mkdir(parents=True, exist_ok=True)
    return d


def files(x: dict) -> tuple[Path, Path]:
    """(master, long file), synthesised on first use and cached (the name holds the recipe version)."""
    d = cache_dir(x["cache_dir"])
    reps = max(1, int(round(x["minutes"] * 60 / x["full_seconds"])))
    master = d / f"testsrc2_720p30_{x['full_seconds']}s_g{GOP_S}_v{_VERSION}.mp4"
    long = d / f"testsrc2_720p30_{reps * x['full_seconds']}s_g{GOP_S}_v{_VERSION}.mp4"
    if not master.exists():
        write_testsrc(master, x["full_seconds"], size=SIZE, rate=RATE, gop_s=GOP_S)
    if not long.exists():
        remux_repeat(master, long, reps)
    return master, long


# ---------------------------------------------------------------------- measurements
def _timed(fn):
    t = time.perf_counter()
    n = fn()
    return n, time.perf_counter() - t


def pyav_all(path: Path, convert=None) -> int:
    """Plain PyAV: decode every frame (threads AUTO); convert frames whose index is in `convert`
    (None: all)."""
    import av

    n = 0
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for i, f in enumerate(c.decode(s)):
            if convert is None or i in convert:
                f.to_ndarray(format="rgb24")
            n += 1
    return n


def pyav_seek_each(path: Path, times) -> int:
    """Plain PyAV: for each sample time seek (backward keyframe) and decode up to it."""
    import av

    n = 0
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for t in times:
            c.seek(int(t / s.time_base), stream=s, backward=True)
            for f in c.decode(s):
                if f.time is not None and f.time >= t - 1e-3:
                    f.to_ndarray(format="rgb24")
                    n += 1
                    break
    return n


def streamprune_read(path: Path, **kw) -> int:
    with open_video(path, **kw) as r:
        return sum(1 for _ in r)


def decord_read(path: Path, indices=None, batch=32) -> int:
    import decord

    vr = decord.VideoReader(str(path), num_threads=0)
    idx = np.arange(len(vr)) if indices is None else np.asarray(indices)
    n = 0
    for i in range(0, len(idx), batch):
        n += len(vr.get_batch(list(map(int, idx[i:i + batch]))).asnumpy())
    return n


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import av

    return f"{cpu}, {os.cpu_count()} cores visible, Python {platform.python_version()}, PyAV {av.__version__}"


def _have_decord(want: bool) -> bool:
    if not want:
        return False
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def plan(opts: SuiteOptions) -> list[Unit]:
    keys = ("minutes", "full_seconds", "seek_targets", "decord", "decode_all", "tune_malloc")
    return [Unit(f"readers/{t}", {"test": t, **{k: opts.extra[k] for k in keys}}) for t in TESTS]


def _row(test, reader, frames, seconds, **kw) -> dict:
    return {"test": test, "reader": reader, "frames": frames, "seconds": seconds,
            "frames_per_s": frames / seconds if seconds else None, **kw}


def run_unit(unit: Unit, opts: SuiteOptions) -> list[dict]:
    """One test's rows: one per reader (seconds = wall time, best of 2 interleaved for full_rate)."""
    x = {**opts.extra, **unit.params}
    test = x["test"]
    tuned = tune_malloc(apply=bool(x["tune_malloc"]))
    master, long = files(x)
    decord = _have_decord(x["decord"])
    with open_video(long) as r:
        info = r.info
    ctx = {"file_min": round(info.duration / 60, 2), "machine": machine(), "malloc_tuned": tuned}
    rows = []
    if test == "full_rate":
        best = {"pyav": np.inf, "streamprune": np.inf}
        n_full = None
        for _ in range(2):
            n_full, t = _timed(lambda: pyav_all(master))
            best["pyav"] = min(best["pyav"], t)
            n, t = _timed(lambda: streamprune_read(master))
            if n != n_full:
                raise RuntimeError(f"open_video read {n} frames, PyAV {n_full}")
            best["streamprune"] = min(best["streamprune"], t)
        rows += [_row(test, k, n_full, v) for k, v in best.items()]
        if decord:
            n, t = _timed(lambda: decord_read(master))
            rows.append(_row(test, "decord", n, t))
    elif test == "fps1":
        with open_video(long, fps=1.0) as r:
            plan_idx = r.planned_indices
        n1, t_sp = _timed(lambda: streamprune_read(long, fps=1.0))
        rows.append(_row(test, "streamprune", n1, t_sp))
        if x["decode_all"]:
            keep = set(plan_idx)
            _, t_all = _timed(lambda: pyav_all(long, convert=keep))
            rows.append(_row(test, "pyav decode-all", len(plan_idx), t_all))
        k = min(x["seek_targets"], len(plan_idx))
        times = [i / RATE for i in plan_idx[:k]]
        n_seek, t_seek = _timed(lambda: pyav_seek_each(long, times))
        rows.append(_row(test, f"pyav seek-each (first {k})", n_seek, t_seek))
        if decord:
            n, t = _timed(lambda: decord_read(long, plan_idx))
            rows.append(_row(test, "decord", n, t))
    elif test == "max_frames32":
        n32, t32 = _timed(lambda: streamprune_read(long, max_frames=32))
        rows.append(_row(test, "streamprune", n32, t32))
        if x["decode_all"]:
            with open_video(long, max_frames=32) as r:
                keep = set(r.planned_indices)
            _, t_all = _timed(lambda: pyav_all(long, convert=keep))
            rows.append(_row(test, "pyav decode-all", len(keep), t_all))
        if decord:
            with open_video(long, max_frames=32) as r:
                idx32 = r.planned_indices
            n, t = _timed(lambda: decord_read(long, idx32))
            rows.append(_row(test, "decord", n, t))
    else:
        raise ValueError(f"unknown readers test {test!r}")
    sp = next(r for r in rows if r["reader"] == "streamprune")
    for r in rows:  # seconds per frame relative to streamprune's (> 1: streamprune is faster)
        r["time_per_frame_vs_streamprune"] = (r["seconds"] / r["frames"]) / (sp["seconds"] / sp["frames"])
        r.update(ctx)
    return rows


COLUMNS = [("test", "test", "s"), ("reader", "reader", "s"), ("frames", "frames", "d"), ("seconds", "s", ".2f"),
           ("frames_per_s", "frames/s", ".1f"), ("time_per_frame_vs_streamprune", "s/frame vs streamprune", ".2f")]


def report(rows: list[dict], opts: SuiteOptions) -> str:
    head = [f"## {TITLE}", ""]
    if rows:
        head += [f"machine: {rows[0].get('machine')}; long file {rows[0].get('file_min')} min of 720p30 H.264, "
                 f"keyframe every {GOP_S} s; glibc allocator tuned: {rows[0].get('malloc_tuned')}; wall time "
                 f"(other work may share the cores)", ""]
    return "\n".join(head + [markdown_rows(rows, COLUMNS)])
