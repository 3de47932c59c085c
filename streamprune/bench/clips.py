"""Synthetic clips for benches and tests: deterministic frame patterns and the one PyAV clip writer.

    write_clip(path, frames, rate=2)                       # any (H, W, 3) uint8 frames -> a video file
    write_video(path, n=30, w=64, h=48, rotation=90)       # `pattern` frames: the frame number is readable back
    synthesize_clip(path, seconds=6)                       # gradient + bouncing square + a scene cut
    scene_frames(3600, fps=1)                              # hours of frames without a file (Frame objects)

Works on PyAV 15.1 and 18.x. Display rotation: PyAV >= 16 writes it through the stream's side data; for an
MP4/MOV file this module writes the track header's display matrix itself (the same bytes FFmpeg writes), so
the result does not depend on the PyAV version.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np


# ---------------------------------------------------------------- frame patterns: (h, w, 3) uint8
def pattern(i: int, h: int, w: int) -> np.ndarray:
    """White top-left quadrant; the frame number coded in the green level of the rest (`green_level`)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 1] = (i * 8) % 256
    img[: h // 2, : w // 2] = 255
    return img


def green_level(img: np.ndarray) -> float:
    """The green level `pattern` wrote (mean of the bottom-right quadrant)."""
    h, w = img.shape[:2]
    return float(img[h // 2 + 2:, w // 2 + 2:, 1].mean())


def box_frame(i: int, h: int, w: int, *, background: int = 60, stripe: bool = False) -> np.ndarray:
    """A white box moving right over a flat grey background; stripe: a red band at the bottom whose level
    encodes the frame number."""
    img = np.full((h, w, 3), background, np.uint8)
    bw, bh = max(1, min(16, w // 4)), max(1, min(16, h // 4))
    x = (i * 7) % max(1, w - bw)
    img[h // 4: h // 4 + bh, x: x + bw] = 255
    if stripe:
        img[-min(12, h):, :, 0] = (i * 25) % 256
    return img


def gradient_frame(i: int, n: int, h: int, w: int) -> np.ndarray:
    """Moving colour gradients and a bouncing yellow square; the scene changes at frame n // 2."""
    yy, xx = np.mgrid[0:h, 0:w]
    cut = i >= n // 2
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = ((xx + 3 * i) % 256) if not cut else (yy * 255 // h)
    img[..., 1] = (yy * 255 // h) if not cut else ((xx * 7 + i) % 256)
    img[..., 2] = 64 if not cut else 200
    cx, cy = int(max(0, w - 40) * abs(math.sin(i / 20))), int(max(0, h - 40) * abs(math.cos(i / 30)))
    img[cy:cy + 40, cx:cx + 40] = (255, 255, 0)
    return img


def scene_frames(seconds: float, *, fps: float = 1.0, size=(224, 224), scene_s: float = 75.0,
                 seed: int = 0) -> Iterator:
    """readers.Frame objects of a synthetic video: a new two-colour background every `scene_s` seconds plus a
    moving white box (no file; for hours of stream)."""
    from streamprune.readers import Frame

    h, w = size
    rng = np.random.default_rng(seed)
    bg = None
    for k in range(int(round(seconds * fps))):
        t = k / fps
        if k == 0 or int(t // scene_s) != int((t - 1 / fps) // scene_s):
            c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
            ramp = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
            bg = (c0 * (1 - ramp) + c1 * ramp).astype(np.uint8).repeat(h, 0)  # (h, w, 3)
        img = bg.copy()
        x = int((k * 7) % max(1, w - 32))
        img[h // 3: h // 3 + 32, x: x + 32] = 255
        yield Frame(time=t, index=k, image=img)


# ---------------------------------------------------------------- the writer
def write_clip(path, frames: Iterable[np.ndarray], *, rate: float = 2, codec: str = "mpeg4",
               pix_fmt: str = "yuv420p", fmt: str | None = None, gop: int | None = None,
               pts_ms: list[int] | None = None, rotation: int | None = None, bframes: bool = True,
               options: dict | None = None, container_options: dict | None = None) -> Path:
    """Encode (H, W, 3) uint8 frames (all the size of the first) with PyAV; returns the path.

    fmt: container format (default from the suffix). gop: keyframe interval (frames). pts_ms: explicit frame
    times in milliseconds (variable frame rate). rotation: display rotation in degrees, counter-clockwise
    (readers report it as `info.rotation`). bframes=False: libx264 without B-frames. options: the encoder's;
    container_options: the muxer's (e.g. {"movflags": "+faststart"})."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError("write_clip needs at least one frame")
    h, w = first.shape[:2]
    patch_matrix = rotation is not None and _is_mov(path, fmt)
    with av.open(str(path), "w", format=fmt, options=container_options or {}) as c:
        s = c.add_stream(codec, rate=Fraction(rate).limit_denominator(1000))
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        opts = dict(options or {})
        if codec == "libx264":
            opts.setdefault("preset", "veryfast" if bframes else "ultrafast")
            if not bframes:
                opts.setdefault("bf", "0")
        if gop is not None:
            s.codec_context.gop_size = gop
            if codec == "libx264":
                opts.update({"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"})
        s.options = opts
        if pts_ms is not None:
            s.codec_context.time_base = Fraction(1, 1000)
            s.time_base = Fraction(1, 1000)
        if rotation is not None and not patch_matrix:
            if not hasattr(s, "set_display_rotation"):
                raise ValueError(f"display rotation for {path.suffix or fmt} needs PyAV >= 16 (MP4/MOV work on any)")
            s.set_display_rotation(rotation)
        for i, img in enumerate(_chain(first, it)):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            if pts_ms is not None:
                f.pts, f.time_base = int(pts_ms[i]), Fraction(1, 1000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    if patch_matrix:
        set_mp4_rotation(path, rotation)
    return path


def _chain(first, rest):
    yield first
    yield from rest


def _is_mov(path: Path, fmt: str | None) -> bool:
    return (fmt or path.suffix.lstrip(".").lower()) in ("mp4", "mov", "m4v")


# ---------------------------------------------------------------- display rotation in MP4/MOV
def display_matrix(degrees: float) -> list[int]:
    """The 3x3 display matrix FFmpeg's av_display_rotation_set writes for a counter-clockwise rotation
    (row-major; a, b, c, d in 16.16 fixed point, w in 2.30)."""
    r = math.radians(degrees)
    c, s = round(math.cos(r) * 65536), round(math.sin(r) * 65536)
    return [c, -s, 0, s, c, 0, 0, 0, 1 << 30]


def _boxes(data: bytes, start: int, end: int):
    """(type, box start, payload start, box end) of the ISO-BMFF boxes in data[start:end]."""
    i = start
    while i + 8 <= end:
        size, kind = struct.unpack(">I4s", data[i:i + 8])
        head = 8
        if size == 1:
            size, head = struct.unpack(">Q", data[i + 8:i + 16])[0], 16
        elif size == 0:
            size = end - i
        if size < head or i + size > end:
            return
        yield kind, i, i + head, i + size
        i += size


def set_mp4_rotation(path, degrees: float) -> None:
    """Write the display matrix of every video track (tkhd with a non-zero size) of an MP4/MOV in place."""
    path = Path(path)
    data = bytearray(path.read_bytes())
    done = 0
    for kind, _, body, end in _boxes(data, 0, len(data)):
        if kind != b"moov":
            continue
        for tk, _, tbody, tend in _boxes(data, body, end):
            if tk != b"trak":
                continue
            for hk, _, hbody, _hend in _boxes(data, tbody, tend):
                if hk != b"tkhd":
                    continue
                version = data[hbody]
                at = hbody + (4 + 8 + 8 + 4 + 4 + 8 if version == 1 else 4 + 4 + 4 + 4 + 4 + 4) + 8 + 8
                w, h = struct.unpack(">II", data[at + 36: at + 44])
                if w == 0 and h == 0:
                    continue  # not a visual track
                data[at: at + 36] = struct.pack(">9i", *display_matrix(degrees))
                done += 1
    if not done:
        raise ValueError(f"{path}: no video track header found to write the rotation into")
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------- ready-made clips
def write_video(path, *, n: int = 30, w: int = 64, h: int = 48, rate: float = 10, codec: str = "libx264",
                frame: Callable[[int, int, int], np.ndarray] = pattern, **kw) -> Path:
    """`n` frames of `frame(i, h, w)` (default `pattern`: the frame number readable with `green_level`);
    the other keywords as in write_clip."""
    return write_clip(path, (frame(i, h, w) for i in range(n)), rate=rate, codec=codec, **kw)


def write_box_clip(path, *, n_frames: int = 10, rate: float = 2, size=(64, 96), cut_at: int | None = None,
                   codec: str = "mpeg4") -> Path:
    """A moving white box on grey that brightens from frame `cut_at` on (a scene change), a red stripe that
    counts frames."""
    h, w = size
    frames = (box_frame(i, h, w, background=60 if cut_at is None or i < cut_at else 200, stripe=True)
              for i in range(n_frames))
    return write_clip(path, frames, rate=rate, codec=codec)


def synthesize_clip(path, *, seconds: float = 6.0, fps: int = 25, size=(240, 320)) -> Path:
    """A deterministic test clip (moving gradients, a bouncing square, a scene cut at mid-clip), MPEG-4."""
    h, w = (size, size) if isinstance(size, int) else size
    n = max(1, int(seconds * fps))
    return write_clip(path, (gradient_frame(i, n, h, w) for i in range(n)), rate=fps)


def write_scene_video(path, seconds: float, *, fps: float = 1.0, size: int = 160) -> Path:
    """`scene_frames` written to a file (MPEG-4): a long stream for the live soak."""
    return write_clip(path, (f.image for f in scene_frames(seconds, fps=fps, size=(size, size))),
                      rate=max(1, int(round(fps))))


def write_testsrc(path, seconds: int, *, size=(1280, 720), rate: int = 30, gop_s: int = 10) -> Path:
    """FFmpeg's testsrc2 pattern, libx264 superfast (B-frames on), closed GOPs of `gop_s` seconds; written to a
    temporary name first so an interrupted write leaves no truncated file at `path`."""
    import av

    path = Path(path)
    tmp = path.with_suffix(".part" + path.suffix)
    w, h = size
    src = av.open(f"testsrc2=size={w}x{h}:rate={rate}:duration={seconds}", format="lavfi")
    try:
        with av.open(str(tmp), "w") as out:
            s = out.add_stream("libx264", rate=rate)
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            g = str(gop_s * rate)
            s.options = {"preset": "superfast", "g": g, "keyint_min": g, "sc_threshold": "0", "open_gop": "0"}
            for f in src.decode(video=0):
                f.pts = None
                f.pict_type = 0  # lavfi marks every frame I, which libx264 would honour (all-intra)
                for p in s.encode(f):
                    out.mux(p)
            for p in s.encode():
                out.mux(p)
    finally:
        src.close()
    tmp.rename(path)
    return path


def remux_repeat(src, path, repeats: int) -> Path:
    """src's video packets `repeats` times end to end, timestamps shifted (no re-encode; closed GOPs make the
    result a valid stream)."""
    import av

    path = Path(path)
    tmp = path.with_suffix(".part" + path.suffix)
    with av.open(str(src)) as probe:
        ins = probe.streams.video[0]
        rate = float(ins.average_rate or ins.base_rate or 30)
        span = int(round(ins.frames / rate / ins.time_base))  # source length in stream ticks
    with av.open(str(tmp), "w") as out:
        os_ = None
        for r in range(repeats):
            with av.open(str(src)) as c:
                ins = c.streams.video[0]
                if os_ is None:
                    os_ = out.add_stream_from_template(ins)
                for p in c.demux(ins):
                    if p.size == 0:
                        continue
                    p.pts += r * span
                    p.dts += r * span
                    p.stream = os_
                    out.mux(p)
    tmp.rename(path)
    return path


def write_ts_segments(path, segments, *, rate: int = 10, restart: bool = False) -> Path:
    """MPEG-TS segments of different frame sizes concatenated byte for byte (`cat a.ts b.ts`, an adaptive
    bitrate switch). segments: [(w, h, n), ...]; `pattern` numbers run on across segments. restart=False:
    timestamps continue across segments; True: each segment restarts at 0."""
    import av

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


def write_big(path, *, w: int = 7680, h: int = 4320, n: int = 1) -> Path:
    """A few H.264 frames at a large size, built directly in yuv420p (no colour conversion: fast)."""
    import av

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
    return Path(path)


def write_audio_only(path) -> Path:
    """One second of a 440 Hz tone (AAC), no video stream."""
    import av

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
    return Path(path)


def write_no_frames(path) -> Path:
    """An MP4 written with a video stream and no frame (the muxer keeps no track: no video stream)."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=2)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        c.start_encoding()
    return Path(path)


def write_index_only(path) -> Path:
    """A faststart MP4 (index first) cut where the frame data begins: frames listed, none there."""
    path = Path(path)
    full = write_video(path.with_suffix(".full.mp4"), n=8, rate=2, codec="mpeg4", frame=box_frame,
                       container_options={"movflags": "faststart"})
    data = full.read_bytes()
    path.write_bytes(data[: data.index(b"mdat") + 4])
    return path


def write_png(path) -> Path:
    from PIL import Image

    Image.fromarray(box_frame(0, 48, 64)).save(path, format="PNG")
    return Path(path)


def write_resolution_change(path) -> Path:
    """MPEG-TS of 320x240 then 640x360 (two streams concatenated, as adaptive bitrate does)."""
    path = Path(path)
    a = write_video(path.with_suffix(".a.ts"), n=4, w=320, h=240, rate=2, codec="mpeg2video", fmt="mpegts",
                    frame=box_frame)
    b = write_video(path.with_suffix(".b.ts"), n=4, w=640, h=360, rate=2, codec="mpeg2video", fmt="mpegts",
                    frame=box_frame)
    path.write_bytes(a.read_bytes() + b.read_bytes())
    return path


def packet_spans(path) -> list[tuple[int, int, bool]]:
    """(file offset, size, keyframe) of every video packet in decode order."""
    import av

    with av.open(str(path)) as c:
        return [(p.pos, p.size, p.is_keyframe) for p in c.demux(video=0) if p.size]


def corrupt_packets(path, first: int, count: int, seed: int = 0, *, dst=None) -> Path:
    """Overwrite the payload of `count` video packets from packet `first` with random bytes (container
    structure intact: garbage mid-stream); in place, or into a copy at `dst`."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    spans = packet_spans(path)[first:first + count]
    data = bytearray(path.read_bytes())
    for pos, size, _ in spans:
        data[pos:pos + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    out = Path(dst) if dst is not None else path
    out.write_bytes(bytes(data))
    return out
