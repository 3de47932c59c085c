"""Reader benchmark: our file reader vs plain PyAV (and decord where installed).

    python -m streamprune.bench.readers_suite [--minutes 10] [--full-seconds 60] [--json]

Synthesises (once, cached) a testsrc2 720p30 H.264 file with a keyframe every 10 s: a 60 s master encoded
with PyAV, remuxed N times end to end (closed GOPs, so the long file is a valid stream). Measures
- full rate on the 60 s master: frames/s of `open_video` vs a plain PyAV loop (decode + rgb24 every frame);
- 1 fps on the long file: `open_video(fps=1)` vs decoding every frame (converting only the sampled ones),
  vs seeking to each sample (on the first `--seek-targets` samples), vs decord's batch read;
- 32 frames spread over the long file (`max_frames=32`) vs decoding every frame.
Progress goes to stderr; results (a table, or JSON with --json) to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from streamprune.readers import open_video
from streamprune.readers.base import tune_malloc

SIZE, RATE, GOP_S = (1280, 720), 30, 10
_VERSION = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m streamprune.bench.readers_suite", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="length of the long file (whole minutes of the master)")
    p.add_argument("--full-seconds", type=int, default=60, help="length of the master / full-rate test file")
    p.add_argument("--seek-targets", type=int, default=30, help="samples timed for the seek-per-sample baseline")
    p.add_argument("--cache-dir", default=None, help="where synthesised files are kept (default ~/.cache/streamprune)")
    p.add_argument("--no-decord", action="store_true", help="skip decord even if installed")
    p.add_argument("--skip-decode-all", action="store_true", help="skip the slow decode-every-frame baseline")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    return p


def _ns(args) -> argparse.Namespace:
    ns = _parser().parse_args([])
    if args is None:
        return ns
    src = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    for k, v in src.items():
        k = k.replace("-", "_")
        if hasattr(ns, k) and v is not None:
            setattr(ns, k, v)
    if src.get("quick"):  # `streamprune bench --suite readers --quick`
        ns.minutes, ns.full_seconds, ns.seek_targets = min(ns.minutes, 2), min(ns.full_seconds, 20), 10
    return ns


def cache_dir(ns) -> Path:
    base = ns.cache_dir or os.environ.get("STREAMPRUNE_CACHE")
    if base is None:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "streamprune"
    d = Path(base) / "bench-readers"
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError:
        d = Path(tempfile.gettempdir()) / "streamprune-bench-readers"
        d.mkdir(parents=True, exist_ok=True)
    return d


def synth_master(path: Path, seconds: int) -> Path:
    """testsrc2 at 720p30, libx264 superfast (B-frames on), closed GOPs of GOP_S seconds."""
    import av

    if path.exists():
        return path
    tmp = path.with_suffix(".part.mp4")
    w, h = SIZE  # (the cache key includes _VERSION: bump it when the recipe changes)
    src = av.open(f"testsrc2=size={w}x{h}:rate={RATE}:duration={seconds}", format="lavfi")
    with av.open(str(tmp), "w") as out:
        s = out.add_stream("libx264", rate=RATE)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        g = str(GOP_S * RATE)
        s.options = {"preset": "superfast", "g": g, "keyint_min": g, "sc_threshold": "0", "open_gop": "0"}
        for f in src.decode(video=0):
            f.pts = None
            f.pict_type = 0  # lavfi marks every frame I, which libx264 would honour (all-intra)
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    src.close()
    tmp.rename(path)
    return path


def synth_long(master: Path, path: Path, repeats: int) -> Path:
    """The master's packets `repeats` times end to end, timestamps shifted (no re-encode)."""
    import av

    if path.exists():
        return path
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(master)) as probe:
        ins = probe.streams.video[0]
        span = int(round(ins.frames / RATE / ins.time_base))  # master length in stream ticks
    with av.open(str(tmp), "w") as out:
        os_ = None
        for r in range(repeats):
            with av.open(str(master)) as src:
                ins = src.streams.video[0]
                if os_ is None:
                    os_ = out.add_stream_from_template(ins)
                for p in src.demux(ins):
                    if p.size == 0:
                        continue
                    p.pts += r * span
                    p.dts += r * span
                    p.stream = os_
                    out.mux(p)
    tmp.rename(path)
    return path


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


def ours(path: Path, **kw) -> int:
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


def run(args=None) -> dict:
    """Run the suite; returns a dict of numbers (also printed by main)."""
    from rich.console import Console

    ns = _ns(args)
    con = Console(stderr=True)
    malloc_tuned = tune_malloc()  # process-wide: the plain PyAV baselines get it too
    have_decord = False
    if not ns.no_decord:
        try:
            import decord  # noqa: F401

            have_decord = True
        except ImportError:
            con.log("decord not installed (pip install decord2): skipping its numbers")
    d = cache_dir(ns)
    reps = max(1, int(round(ns.minutes * 60 / ns.full_seconds)))
    master = d / f"testsrc2_720p30_{ns.full_seconds}s_g{GOP_S}_v{_VERSION}.mp4"
    long = d / f"testsrc2_720p30_{reps * ns.full_seconds}s_g{GOP_S}_v{_VERSION}.mp4"
    con.log(f"synthesising (cached) {master.name}")
    _, t_master = _timed(lambda: synth_master(master, ns.full_seconds))
    con.log(f"remuxing (cached) {long.name}")
    synth_long(master, long, reps)
    with open_video(long) as r:
        info = r.info
    res = {"suite": "readers", "machine": machine(), "malloc_tuned": malloc_tuned,
           "file": {"path": str(long), "duration_s": info.duration, "frames": info.frames, "size": f"{info.width}x{info.height}",
                    "fps": info.fps, "keyframe_interval_s": GOP_S, "bytes": long.stat().st_size}}

    # full rate on the master
    con.log("full rate: plain PyAV vs open_video (best of 2, interleaved)")
    best = {"pyav": 1e9, "ours": 1e9, "decord": 1e9}
    n_full = None
    for _ in range(2):
        n_full, t = _timed(lambda: pyav_all(master))
        best["pyav"] = min(best["pyav"], t)
        n, t = _timed(lambda: ours(master))
        assert n == n_full, (n, n_full)
        best["ours"] = min(best["ours"], t)
    if have_decord:
        n, t = _timed(lambda: decord_read(master))
        best["decord"] = t
    full = {"frames": n_full, "pyav_fps": n_full / best["pyav"], "ours_fps": n_full / best["ours"],
            "ours_vs_pyav": best["pyav"] / best["ours"]}
    if have_decord:
        full["decord_fps"] = n_full / best["decord"]
    res["full_rate"] = full
    con.log(f"  {full}")

    # 1 fps on the long file
    with open_video(long, fps=1.0) as r:
        plan_idx = r.planned_indices
    con.log(f"1 fps on {info.duration / 60:.1f} min: open_video(fps=1) ({len(plan_idx)} frames)")
    n1, t_ours = _timed(lambda: ours(long, fps=1.0))
    fps1 = {"frames": n1, "ours_s": t_ours}
    if not ns.skip_decode_all:
        con.log("  decode every frame, convert the sampled ones (plain PyAV)")
        keep = set(plan_idx)
        _, t_all = _timed(lambda: pyav_all(long, convert=keep))
        fps1.update(decode_all_s=t_all, speedup_vs_decode_all=t_all / t_ours)
    k = min(ns.seek_targets, len(plan_idx))
    con.log(f"  seek to each sample (first {k} samples)")
    times = [i / RATE for i in plan_idx[:k]]
    _, t_seek = _timed(lambda: pyav_seek_each(long, times))
    fps1.update(seek_each_s_per_frame=t_seek / max(k, 1), ours_s_per_frame=t_ours / max(n1, 1))
    if have_decord:
        con.log("  decord get_batch of the same frames")
        _, t_dec = _timed(lambda: decord_read(long, plan_idx))
        fps1.update(decord_s=t_dec, ours_vs_decord=t_dec / t_ours)
    res["fps1"] = fps1
    con.log(f"  {fps1}")

    # 32 frames spread over the long file
    con.log("max_frames=32 on the long file")
    n32, t32 = _timed(lambda: ours(long, max_frames=32))
    mf = {"frames": n32, "ours_s": t32}
    if "decode_all_s" in fps1:
        mf["speedup_vs_decode_all"] = fps1["decode_all_s"] / t32
    if have_decord:
        with open_video(long, max_frames=32) as r:
            idx32 = r.planned_indices
        _, t_dec = _timed(lambda: decord_read(long, idx32))
        mf.update(decord_s=t_dec)
    res["max_frames32"] = mf
    con.log(f"  {mf}")
    res["synth_master_s"] = t_master
    return res


def print_table(res: dict) -> None:
    f, full, f1, mf = res["file"], res["full_rate"], res["fps1"], res["max_frames32"]
    print(f"machine: {res['machine']}")
    print(f"file: {f['size']} {f['fps']:.0f} fps, {f['duration_s'] / 60:.1f} min, keyframe every {f['keyframe_interval_s']} s")
    print(f"full rate ({full['frames']} frames): PyAV {full['pyav_fps']:.1f} fps, ours {full['ours_fps']:.1f} fps "
          f"({full['ours_vs_pyav']:.2f}x)" + (f", decord {full['decord_fps']:.1f} fps" if "decord_fps" in full else ""))
    line = f"1 fps ({f1['frames']} frames): ours {f1['ours_s']:.1f} s"
    if "decode_all_s" in f1:
        line += f", decode-all {f1['decode_all_s']:.1f} s ({f1['speedup_vs_decode_all']:.2f}x faster)"
    line += f", seek-each {f1['seek_each_s_per_frame'] * 1e3:.0f} ms/frame vs ours {f1['ours_s_per_frame'] * 1e3:.0f} ms/frame"
    if "decord_s" in f1:
        line += f", decord {f1['decord_s']:.1f} s"
    print(line)
    line = f"max_frames=32: ours {mf['ours_s']:.2f} s"
    if "speedup_vs_decode_all" in mf:
        line += f" ({mf['speedup_vs_decode_all']:.0f}x faster than decode-all)"
    if "decord_s" in mf:
        line += f", decord {mf['decord_s']:.2f} s"
    print(line)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        res = run(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print_table(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
