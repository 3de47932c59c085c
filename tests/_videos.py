"""Small synthetic videos for the reader tests, written with PyAV into a folder (tmp_path)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def pattern(i: int, h: int, w: int) -> np.ndarray:
    """(h, w, 3) uint8: white top-left quadrant, frame number coded in the green level of the rest."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 1] = (i * 8) % 256
    img[: h // 2, : w // 2] = 255
    return img


def green_level(img: np.ndarray) -> float:
    """Recover the green level written by `pattern` (bottom-right quadrant mean)."""
    h, w = img.shape[:2]
    return float(img[h // 2 + 2:, w // 2 + 2:, 1].mean())


def write_video(path: Path, *, n=30, w=64, h=48, rate=10, codec="libx264", pix_fmt="yuv420p", gop=None,
                pts=None, rotation=None, options=None, container_options=None, bframes=True) -> Path:
    """Encode `n` pattern frames. pts: explicit times in milliseconds (variable frame rate)."""
    with av.open(str(path), "w", container_options=container_options or {}) as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        opts = dict(options or {})
        if codec == "libx264":
            opts.setdefault("preset", "ultrafast" if not bframes else "veryfast")
            if not bframes:
                opts.setdefault("bf", "0")
        if gop is not None:
            s.codec_context.gop_size = gop
            if codec == "libx264":
                opts.update({"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"})
        s.options = opts
        if pts is not None:
            s.codec_context.time_base = Fraction(1, 1000)
            s.time_base = Fraction(1, 1000)
        if rotation is not None:
            s.set_display_rotation(rotation)
        for i in range(n):
            f = av.VideoFrame.from_ndarray(pattern(i, h, w), format="rgb24")
            if pts is not None:
                f.pts, f.time_base = int(pts[i]), Fraction(1, 1000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def write_audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        t = np.arange(16000) / 16000
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]  # (1, n)
        fr = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        fr.sample_rate, fr.pts = 16000, 0
        for p in s.encode(fr):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def packet_spans(path: Path) -> list[tuple[int, int, bool]]:
    """(file offset, size, keyframe) of every video packet in decode order."""
    with av.open(str(path)) as c:
        return [(p.pos, p.size, p.is_keyframe) for p in c.demux(video=0) if p.size]


def corrupt_packets(path: Path, first: int, count: int, seed: int = 0) -> None:
    """Overwrite the payload of `count` packets starting at packet `first` with random bytes."""
    rng = np.random.default_rng(seed)
    spans = packet_spans(path)[first:first + count]
    with open(path, "r+b") as f:
        for pos, size, _ in spans:
            f.seek(pos)
            f.write(rng.integers(0, 256, size, dtype=np.uint8).tobytes())


def write_big(path: Path, *, w=7680, h=4320, n=1) -> Path:
    """A few H.264 frames at a large size, built directly in yuv420p (no colour conversion: fast)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=5)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast"}
        yuv = np.full((h * 3 // 2, w), 128, np.uint8)  # (1.5 h, w) planar: Y then U, V
        yuv[:h] = 16
        yuv[: h // 2, : w // 2] = 235  # white top-left quadrant
        for _ in range(n):
            for p in s.encode(av.VideoFrame.from_ndarray(yuv, format="yuv420p")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def write_ts_segments(path: Path, segments, *, rate=10, restart=False) -> Path:
    """MPEG-TS segments of different frame sizes, concatenated byte for byte (what `cat a.ts b.ts` or an
    adaptive-bitrate switch gives). segments: [(w, h, n), ...]; frames carry `pattern` numbers that run on
    across segments. restart=False: timestamps continue across segments; True: each segment restarts at 0."""
    path = Path(path)
    data, first = b"", 0
    for k, (w, h, n) in enumerate(segments):
        part = path.with_name(f"{path.stem}.seg{k}.ts")
        with av.open(str(part), "w", format="mpegts") as c:
            s = c.add_stream("libx264", rate=rate)
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            s.options = {"preset": "ultrafast", "bf": "0"}
            s.codec_context.time_base = Fraction(1, rate)
            for i in range(n):
                f = av.VideoFrame.from_ndarray(pattern(first + i, h, w), format="rgb24")
                f.pts, f.time_base = (i if restart else first + i), Fraction(1, rate)
                for p in s.encode(f):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
        data += part.read_bytes()
        part.unlink()
        first += n
    path.write_bytes(data)
    return path
