"""Frame -> model-input resize policy, in torch (no torchvision).

Used by the model adapters (the exact model input size, as the stock processors compute it). The readers cap
the decode resolution with their own size callbacks (readers.base.size_callback), not with this module.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

MAX_ASPECT_RATIO = 200.0


def smart_resize(
    height: int,
    width: int,
    *,
    factor: int = 28,
    min_pixels: int = 128 * 28 * 28,
    max_pixels: int = 768 * 28 * 28,
) -> tuple[int, int]:
    """Closest (h, w) to (height, width) with both sides multiples of `factor` and an area in
    [min_pixels, max_pixels], aspect ratio preserved as well as the grid allows (Qwen2-VL's rule)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(f"aspect ratio {max(height, width) / min(height, width):.0f} exceeds {MAX_ASPECT_RATIO:.0f}")
    if min_pixels > max_pixels:
        raise ValueError(f"min_pixels {min_pixels} > max_pixels {max_pixels}")
    h = round(height / factor) * factor  # may be 0 for a side < factor / 2: the min_pixels branch scales it up
    w = round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return max(factor, h), max(factor, w)  # (the clamp only matters for min_pixels == 0)


def clip_resize(
    n_frames: int,
    height: int,
    width: int,
    *,
    temporal: int = 2,
    factor: int = 32,
    min_pixels: int = 128 * 32 * 32,
    max_pixels: int = 768 * 32 * 32,
) -> tuple[int, int]:
    """Qwen3-VL's rule: the closest (h, w), multiples of `factor`, with the clip's t*h*w within
    [min_pixels, max_pixels] (t = n_frames rounded to a multiple of `temporal`); frames smaller than
    `factor` are first scaled up to it."""
    if n_frames < temporal:
        raise ValueError(f"a clip needs at least {temporal} frames, got {n_frames}")
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(f"aspect ratio {max(height, width) / min(height, width):.0f} exceeds {MAX_ASPECT_RATIO:.0f}")
    h = round(height / factor) * factor
    w = round(width / factor) * factor
    t = round(n_frames / temporal) * temporal
    if t * h * w > max_pixels:
        beta = math.sqrt(n_frames * height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif t * h * w < min_pixels:
        beta = math.sqrt(min_pixels / (n_frames * height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def resize_frames(frames, size: tuple[int, int], *, as_uint8: bool = True) -> torch.Tensor:
    """Resize (T, H, W, 3) uint8 RGB frames to `size` = (h, w) with bicubic antialiasing.

    Returns (T, 3, h, w) float32 in [0, 255]. With `as_uint8` (uint8 input on the CPU) the resize runs in
    torch's uint8 kernel, as torchvision's `resize` does for uint8 tensors, so the result is bit-identical
    to the stock Hugging Face processors' (a float resize rounded to uint8 differs from it by up to 3
    levels on a few pixels); elsewhere it is a float resize rounded and clamped like a uint8 image."""
    x = torch.as_tensor(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (T, H, W, 3), got {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2)  # (T, 3, H, W)
    if tuple(x.shape[-2:]) == tuple(size):
        return x.to(torch.float32)
    if as_uint8 and x.dtype == torch.uint8 and x.device.type == "cpu":
        x = F.interpolate(x.contiguous(), size=tuple(size), mode="bicubic", align_corners=False, antialias=True)
        return x.to(torch.float32)
    x = F.interpolate(x.to(torch.float32), size=tuple(size), mode="bicubic", align_corners=False, antialias=True)
    if as_uint8:
        x = x.round_().clamp_(0, 255)
    return x
