"""A PNG contact sheet: sampled frames with the visual tokens that reached the LLM highlighted.

Kept token cells stay bright with an outline; the rest of each frame is dimmed. Each tile is labelled
with its time and the number of kept cells.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TILE_W = 240
DIM = 0.3
OUTLINE = (255, 210, 0)


def thumbnail(image: np.ndarray, width: int = TILE_W) -> np.ndarray:
    """A small copy of an (H, W, 3) uint8 frame, `width` pixels wide (never upscaled)."""
    h, w = image.shape[:2]
    if w <= width:
        return np.ascontiguousarray(image)
    size = (width, max(1, round(h * width / w)))
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(size, Image.BILINEAR))


def format_time(t: float) -> str:
    t = max(0.0, float(t))
    m, s = divmod(t, 60.0)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:04.1f}" if h else f"{m:02d}:{s:04.1f}"


def _tile(image: np.ndarray, kept: np.ndarray | None, grid: tuple[int, int], width: int) -> Image.Image:
    img = Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
    img = img.resize((width, max(1, round(img.height * width / img.width))), Image.BILINEAR)
    gh, gw = grid
    if kept is None or gh <= 0 or gw <= 0:
        return img
    kept = np.asarray(kept, dtype=bool).reshape(gh, gw)
    # Bright where kept, dimmed elsewhere: upsample the cell mask to the tile.
    mask = Image.fromarray((kept * 255).astype(np.uint8)).resize(img.size, Image.NEAREST)
    dim = Image.eval(img, lambda v: int(v * DIM))
    out = Image.composite(img, dim, mask)
    draw = ImageDraw.Draw(out)
    cw, ch = img.width / gw, img.height / gh
    for r, c in zip(*np.nonzero(kept)):
        draw.rectangle([c * cw, r * ch, (c + 1) * cw - 1, (r + 1) * ch - 1], outline=OUTLINE)
    return out


def save_contact_sheet(path, frames, kept, grid, *, cols: int | None = None, title: str | None = None,
                       tile_width: int = TILE_W) -> Path:
    """Write a contact sheet PNG.

    frames: list of (time_seconds, (H, W, 3) uint8 image); kept: list (same length) of bool masks of shape
    `grid` = (rows, cols) of token cells per frame, or None for a frame with no token information.
    """
    if not frames:
        raise ValueError("contact sheet: no frames to draw")
    if len(kept) != len(frames):
        raise ValueError(f"contact sheet: {len(frames)} frames but {len(kept)} kept masks")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"contact sheet must be a .png file, got {path.name}")
    if path.parent and not path.parent.exists():
        raise ValueError(f"folder does not exist: {path.parent}")
    cols = cols or min(4, len(frames))
    rows = math.ceil(len(frames) / cols)
    tiles = [_tile(img, k, grid, tile_width) for (_, img), k in zip(frames, kept)]
    th = max(t.height for t in tiles)
    label_h, pad = 16, 4
    top = 20 if title else 0
    sheet = Image.new("RGB", (cols * (tile_width + pad) + pad, top + rows * (th + label_h + pad) + pad), (20, 20, 20))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    if title:
        draw.text((pad, 4), title, fill=(235, 235, 235), font=font)
    for i, ((t, _), tile, k) in enumerate(zip(frames, tiles, kept)):
        x = pad + (i % cols) * (tile_width + pad)
        y = top + pad + (i // cols) * (th + label_h + pad)
        sheet.paste(tile, (x, y))
        n = int(np.asarray(k, dtype=bool).sum()) if k is not None else 0
        draw.text((x + 2, y + tile.height + 2), f"{format_time(t)}  kept {n}", fill=(235, 235, 235), font=font)
    sheet.save(path, format="PNG")
    return path


# ---------------------------------------------------------------- what the pipeline keeps for the sheet
class Thumbs:
    """At most `cap` small frames spread evenly over a stream of unknown length: keep every `stride`-th
    frame, doubling the stride (and dropping every other thumbnail) when full."""

    def __init__(self, cap: int):
        self.cap, self.stride, self.items = max(0, cap), 1, {}  # index -> (time, image)

    def offer(self, index: int, t: float, image: np.ndarray) -> None:
        if self.cap == 0 or index % self.stride:
            return
        self.items[index] = (t, thumbnail(image))
        while len(self.items) > self.cap:
            self.stride *= 2
            self.items = {i: v for i, v in self.items.items() if i % self.stride == 0}


def token_cells_guess(enc, frame_pos: int, hw: tuple[int, int]):
    """Guess one frame's token grid from the block's token count and the frame's aspect ratio.

    Used for families whose adapter does not record positions: tokens laid out row-major on the grid
    (rows * cols == n or n - 1, the extra CLS / newline token, assumed last, mapped nowhere) whose aspect
    ratio is closest to the frame's."""
    n = int(enc.tokens.shape[0])
    H, W = hw
    best = None
    for extra in (0, 1):
        m = n - extra
        for r in range(1, int(math.isqrt(max(m, 1))) * 4 + 2):
            if m > 0 and m % r == 0:
                c = m // r
                err = abs(math.log((r / c) / (H / W)))
                if best is None or err < best[0] - 1e-9:
                    best = (err, extra, r, c)
    if best is None:
        return None, None
    _, extra, r, c = best
    cell = np.full(n, -1, dtype=np.int64)
    cell[: n - extra] = np.arange(n - extra)
    return (r, c), cell
