"""wrap(): an already-loaded transformers model with its stock processor, against what AutoProcessor /
AutoVideoProcessor themselves loaded (the settings used are the processor's, not the family's defaults)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import streamprune
from streamprune.models import FAMILIES, adapter_for, wrap_model, write_tiny_model

# wrap() reads a processor the user loaded; the stock video processors that these tests load need torchvision
# (CI's lowest leg has none: the tests run in the newest leg, as the fidelity oracle tests do)
pytest.importorskip("torchvision", reason="the stock video processors need torchvision; run in CI's newest leg")

QWEN = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
CASES = [(f, layout) for f in FAMILIES for layout in ("video", "preprocessor", "nested")]


def _load(path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return AutoModelForImageTextToText.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("wrap")
    return {(f, layout): write_tiny_model(f, root / f"{f}-{layout}", layout=layout) for f, layout in CASES}


def _no_warnings(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        return fn()


@pytest.mark.parametrize("family,layout", CASES)
def test_wrap_uses_the_stock_processors_settings(folders, family, layout):
    from transformers import AutoVideoProcessor

    path = folders[family, layout]
    model, proc = _load(path)
    vp = AutoVideoProcessor.from_pretrained(path)  # loaded on its own: what the stock loader finds
    handle = _no_warnings(lambda: streamprune.wrap(model, proc, budget=8, memory=16))
    a = handle.adapter
    assert a.model is model and a.tokenizer is proc.tokenizer and a.family == family
    assert a.template == proc.chat_template
    assert torch.allclose(a.mean.flatten(), torch.tensor(vp.image_mean, dtype=torch.float32))
    assert torch.allclose(a.std.flatten(), torch.tensor(vp.image_std, dtype=torch.float32))
    if family in QWEN:
        assert (a.min_pixels, a.max_pixels) == (vp.size["shortest_edge"], vp.size["longest_edge"])
        assert (a.patch, a.temporal, a.merge) == (vp.patch_size, vp.temporal_patch_size, vp.merge_size)
        want_fps = float(vp.fps) if vp.do_sample_frames and vp.fps else 1.0  # Qwen3-VL samples at 2 fps
        assert handle.config.fps == want_fps
    else:
        crop = vp.crop_size or vp.size
        assert a.image_size == crop["height"] == crop["width"]
        assert handle.config.fps == 1.0
    assert handle.config.budget == 8 and handle.config.method == "subspace"


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl", "llava_onevision"])
def test_wrap_reads_the_processor_object_not_the_files(folders, family):
    """Settings changed on the loaded processor are the ones used (load_model reads the files instead)."""
    model, proc = _load(folders[family, "video"])
    vp = proc.video_processor
    vp.image_mean, vp.image_std = [0.1, 0.2, 0.3], [0.4, 0.5, 0.6]
    if family in QWEN:
        f = vp.patch_size * vp.merge_size
        vp.size = {"shortest_edge": 3 * f * f, "longest_edge": 9 * f * f}
    a = _no_warnings(lambda: wrap_model(model, proc))
    assert torch.allclose(a.mean.flatten(), torch.tensor([0.1, 0.2, 0.3])) and torch.allclose(
        a.std.flatten(), torch.tensor([0.4, 0.5, 0.6]))
    if family in QWEN:
        f = a.patch * a.merge
        assert (a.min_pixels, a.max_pixels) == (3 * f * f, 9 * f * f)
        h, w = a.frame_size(720, 1280, 4)
        assert h * w <= 9 * f * f * (1 if family != "qwen3_vl" else 2)  # within the new bounds


def test_a_tokenizer_alone_falls_back_with_one_warning_line(folders):
    from streamprune.models.base import CLIP_MEAN, CLIP_STD

    model, proc = _load(folders["qwen2_vl", "video"])
    with pytest.warns(UserWarning, match="default pixel bounds") as rec:
        a = wrap_model(model, proc.tokenizer)
    assert all("\n" not in str(r.message) for r in rec)
    f = a.patch * a.merge
    assert (a.min_pixels, a.max_pixels) == (128 * f * f, 768 * f * f)  # the class defaults, as said
    assert torch.allclose(a.mean.flatten(), torch.tensor(CLIP_MEAN)) and torch.allclose(a.std.flatten(),
                                                                                          torch.tensor(CLIP_STD))


def test_a_template_without_video_falls_back_with_a_warning(folders):
    model, proc = _load(folders["qwen2_vl", "video"])
    proc.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    proc.tokenizer.chat_template = None
    with pytest.warns(UserWarning, match="default template"):
        a = wrap_model(model, proc)
    assert a.template is None
    pre, post = a.render_prompt("What is white?")  # the family's own template renders the prompt
    assert pre and post


def test_a_processor_for_another_tower_is_refused(folders):
    model, proc = _load(folders["qwen2_vl", "video"])
    proc.video_processor.patch_size = 16
    with pytest.raises(ValueError, match="patch_size 16 does not match") as e:
        wrap_model(model, proc)
    assert "\n" not in str(e.value)


def test_adapter_for_keeps_working_with_a_tokenizer(folders):
    model, proc = _load(folders["qwen2_vl", "video"])
    a = _no_warnings(lambda: adapter_for(model, proc.tokenizer))  # the old way: defaults, no warning
    f = a.patch * a.merge
    assert (a.min_pixels, a.max_pixels) == (128 * f * f, 768 * f * f)
    b = _no_warnings(lambda: adapter_for(model, proc))  # a processor in its place: its settings
    assert (b.min_pixels, b.max_pixels) == (proc.video_processor.size["shortest_edge"],
                                            proc.video_processor.size["longest_edge"])


def test_the_handle_answers_through_ask_pipeline_and_itself(folders, tmp_path):
    from streamprune.bench.clips import write_box_clip

    model, proc = _load(folders["qwen2_vl", "video"])
    handle = streamprune.wrap(model, proc, budget=6, memory=12, max_new_tokens=2)
    video = write_box_clip(tmp_path / "v.mp4", n_frames=6, rate=2)
    a1 = handle.ask(str(video), "Where is the white box?")
    a2 = streamprune.ask(str(video), "Where is the white box?", model=handle)
    assert a1.text == a2.text and a1.tokens_to_llm == a2.tokens_to_llm <= 6 and a1.budget == 6
    a3 = handle.ask(str(video), "Where is the white box?", budget=4)  # overrides: AskConfig fields
    assert a3.tokens_to_llm <= 4 and a3.budget == 4
    pipe = streamprune.Pipeline(handle)
    assert pipe.adapter is handle.adapter and pipe.config is handle.config
    frames = np.random.default_rng(0).integers(0, 256, (4, 56, 84, 3), dtype=np.uint8)
    pipe.push_frames(frames, times=[0.0, 0.5, 1.0, 1.5])
    assert pipe.ask("What is white?").frames == 4
    with pytest.raises(ValueError, match="budget"):
        streamprune.wrap(model, proc, budget=0)
