"""Where a checkpoint's video settings come from, and the frame-size rules, against transformers' own code."""

from __future__ import annotations

import json

import pytest

from streamprune.models import load_model, write_tiny_model
from streamprune.models import video_preproc_config
from streamprune.resize import clip_resize, smart_resize

SIZES = [(720, 1280), (544, 1280), (359, 641), (144, 176), (120, 1000), (700, 90), (28, 28), (13, 2000 // 11)]


def _write(folder, name, d):
    (folder / name).write_text(json.dumps(d))


def test_settings_are_found_in_the_stock_loaders_order(tmp_path):
    """nested processor_config.json["video_processor"] > video_preprocessor_config.json > preprocessor_config.json."""
    assert video_preproc_config(tmp_path) == {}
    _write(tmp_path, "preprocessor_config.json", {"max_pixels": 1})
    assert video_preproc_config(tmp_path) == {"max_pixels": 1}
    _write(tmp_path, "video_preprocessor_config.json", {"max_pixels": 2})
    assert video_preproc_config(tmp_path) == {"max_pixels": 2}
    _write(tmp_path, "processor_config.json", {"processor_class": "Qwen2VLProcessor"})  # flat: not video settings
    assert video_preproc_config(tmp_path) == {"max_pixels": 2}
    _write(tmp_path, "processor_config.json", {"video_processor": {"max_pixels": 3}, "image_processor": {}})
    assert video_preproc_config(tmp_path) == {"max_pixels": 3}


def test_a_hub_style_preprocessor_config_alone_sets_the_qwen2_vl_pixel_bounds(tmp_path):
    """Qwen/Qwen2-VL-2B-Instruct ships only preprocessor_config.json (min_pixels 3136, max_pixels 12845056):
    720p frames must become 52 x 92 patches like the stock processor's, not the class defaults' 40 x 72."""
    folder = write_tiny_model("qwen2_vl", tmp_path / "m")
    (folder / "video_preprocessor_config.json").unlink()
    _write(folder, "preprocessor_config.json", {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14,
                                                "temporal_patch_size": 2, "merge_size": 2})
    a = load_model(folder, device="cpu")
    assert (a.min_pixels, a.max_pixels) == (3136, 12845056)
    h, w = a.frame_size(720, 1280)
    assert (h // 14, w // 14) == (52, 92)


@pytest.mark.parametrize("hw", SIZES)
def test_qwen2_frame_rule_equals_transformers(hw):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as stock  # no torchvision

    for lo, hi in [(3136, 12845056), (128 * 28 * 28, 768 * 28 * 28), (28 * 28 * 4, 28 * 28 * 16)]:
        assert smart_resize(*hw, factor=28, min_pixels=lo, max_pixels=hi) == stock(*hw, factor=28, min_pixels=lo,
                                                                                    max_pixels=hi)


@pytest.mark.parametrize("hw", SIZES)
def test_qwen3_clip_rule_equals_transformers(hw):
    pytest.importorskip("torchvision")  # the stock Qwen3-VL video processor module imports it
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize as stock

    for t in (2, 3, 5, 16, 64, 600):
        for lo, hi in [(4096, 25165824), (128 * 32 * 32, 768 * 32 * 32)]:
            ours = clip_resize(t, *hw, temporal=2, factor=32, min_pixels=lo, max_pixels=hi)
            assert ours == stock(t, *hw, temporal_factor=2, factor=32, min_pixels=lo, max_pixels=hi), (t, hw, lo, hi)


def test_qwen3_frames_shrink_with_the_clip_and_live_uses_the_stated_clip_length(tmp_path):
    from streamprune.models.qwen_vl import LIVE_CLIP_FRAMES

    a = load_model(write_tiny_model("qwen3_vl", tmp_path / "m"), device="cpu")
    sizes = [a.frame_size(720, 1280, n) for n in (4, 16, 64)]
    assert sizes[0][0] * sizes[0][1] > sizes[1][0] * sizes[1][1] > sizes[2][0] * sizes[2][1]
    assert a.clip_frames is None and a.frame_size(720, 1280) == a.frame_size(720, 1280, LIVE_CLIP_FRAMES)
    a.clip_frames = 16
    assert a.frame_size(720, 1280) == sizes[1]
    assert a.max_frame_size(720, 1280) == a.frame_size(720, 1280, 2)  # the decode cap covers every length


def test_ask_sizes_qwen3_frames_by_the_files_frame_count(tmp_path):
    """run_video tells the adapter the clip's length (from the reader's plan) while it encodes, then forgets it."""
    from streamprune.models.qwen_vl import P_GH, P_GW
    from streamprune.pipeline import AskConfig, Pipeline, run_video

    from streamprune.bench.clips import write_box_clip

    video = write_box_clip(tmp_path / "v.mp4", n_frames=6, rate=2, size=(360, 640))
    a = load_model(write_tiny_model("qwen3_vl", tmp_path / "m"), device="cpu")
    pipe = Pipeline(a, AskConfig(budget=4096, memory=8192, fps=2.0))
    run_video(pipe, video)
    mem = pipe.selector.memory
    f = a.patch * a.merge
    h, w = a.frame_size(360, 640, 6)
    assert (int(mem.payload[0, P_GH]), int(mem.payload[0, P_GW])) == (h // f, w // f)
    assert a.frame_size(360, 640, 6) != a.frame_size(360, 640)  # not the live policy's size
    assert a.clip_frames is None


def test_ask_feeds_the_model_full_size_frames_by_default(tmp_path):
    """By default nothing is resized at decode time: the tokens of the ask path equal those of the adapter on
    the file's full-size frames (the stock processors resize once, from the decoded frame)."""
    import numpy as np
    import torch

    from streamprune.pipeline import AskConfig, Pipeline, decode_size, run_video
    from streamprune.readers import open_video
    from streamprune.bench.clips import write_box_clip

    assert AskConfig().decode_headroom is None
    video = write_box_clip(tmp_path / "v.mp4", n_frames=3, rate=1, size=(360, 640))
    a = load_model(write_tiny_model("video_llava", tmp_path / "m"), device="cpu")
    assert decode_size(a, None) is None and decode_size(a, 2.0)(360, 640) != (360, 640)  # the cap would apply
    pipe = Pipeline(a, AskConfig(budget=4096, memory=8192, fps=1.0, method="window"))
    run_video(pipe, video)
    frames = np.stack([f.image for f in open_video(video, fps=1.0)])
    direct = a.encode(frames, [0.0, 1.0, 2.0])
    torch.testing.assert_close(pipe.selector.memory.tokens.to(direct.tokens.dtype), direct.tokens, rtol=0, atol=0)
    with pytest.raises(ValueError, match="decode_headroom"):
        AskConfig(decode_headroom=0.5)
