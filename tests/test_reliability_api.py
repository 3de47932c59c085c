"""Reliability of the Python API (issue 11): memories that grow only as they fill and are refused up front
when the machine cannot hold them, strict AskConfig fields, cheap checks before any model loads, a stop
that answers from what was read, device/attn checks, the offline hint, nouns that are never stop words."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch

from streamprune import nouns as nouns_mod
from streamprune.models import ModelLoadError, load_model, write_tiny_model
from streamprune.models import check_attn, parse_device
from streamprune.pipeline import MAX_MEMORY_TOKENS, AskConfig, Pipeline, ask, run_video
from streamprune.select import StreamingSelector, memory_bytes

from streamprune.bench.clips import write_box_clip as make_video


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_model(str(write_tiny_model("qwen2_vl", tmp_path_factory.mktemp("m") / "q")), device="cpu")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("v") / "clip.mp4", n_frames=20, rate=2)


# ---------------------------------------------------------------- memory: lazy growth, refused up front
def test_a_huge_budget_allocates_nothing_up_front():
    s = StreamingSelector(10**9)  # was: RuntimeError allocating the whole budget on the first push
    s.push(torch.randn(4, 8), 0.0)
    assert s._cap <= 64 and len(s.memory) == 4
    for i in range(40):  # buffers follow the memory as it fills, geometrically
        s.push(torch.randn(32, 8), float(i + 1))
    assert len(s.memory) <= s._cap <= 2 * max(64, len(s.memory))


def test_buffers_stop_at_the_budget():
    s = StreamingSelector(100)
    caps = []
    for i in range(60):
        s.push(torch.randn(16, 64), float(i))
        caps.append(s._cap)
    assert len(s.memory) == 100
    assert caps == sorted(caps) and caps[0] == 64 and caps[-1] <= 100 + 64


def test_a_refused_allocation_is_a_value_error_and_changes_nothing():
    s = StreamingSelector(10**9)
    s.push(torch.randn(4, 8), 0.0)
    cap, mem = s._cap, s.memory
    with pytest.raises(ValueError, match="out of memory"):
        s._grow(10**13)  # 10**13 slots x 8 floats: no machine has it
    assert s._cap == cap and torch.equal(s.memory.tokens, mem.tokens)
    s.push(torch.randn(4, 8), 1.0)  # still usable


def test_memory_bytes_bounds_what_a_full_selector_holds():
    d, k = 96, 300
    s = StreamingSelector(k)
    for i in range(80):
        s.push(torch.randn(24, d), float(i))
    held = sum(t.numel() * t.element_size() for t in (s._raw, s._sw, s._mass, s._use, s._times, s._ids,
                                                      s._alive, s._score))
    held += sum(g._S.numel() * 4 + g._Q.numel() * 4 + g._G.numel() * 8 for g in s._segments)
    assert held <= memory_bytes(k, d)
    assert memory_bytes(k, d) >= k * d * 4  # at least the tokens themselves


def test_memory_the_machine_cannot_hold_is_refused_with_the_largest_that_fits(tiny, monkeypatch):
    import streamprune.checks as checks

    have = 64 * 2**20
    monkeypatch.setattr(checks, "available_bytes", lambda device: have)
    with pytest.raises(ValueError, match="at most") as e:
        Pipeline(tiny, AskConfig(budget=8, memory=2**22))
    msg = str(e.value)
    assert "\n" not in msg and f"hidden size {tiny.hidden_size}" in msg and "available" in msg
    fit = int(msg.rsplit("at most ", 1)[1].split()[0])
    assert memory_bytes(fit, tiny.hidden_size, payload_width=6) <= have < memory_bytes(fit + 1, tiny.hidden_size,
                                                                                       payload_width=6)
    Pipeline(tiny, AskConfig(budget=8, memory=fit))  # what it says fits is taken


def test_memory_above_the_documented_cap_is_refused_before_any_model():
    with pytest.raises(ValueError, match=r"2\*\*24"):
        AskConfig(memory=MAX_MEMORY_TOKENS + 1)
    with pytest.raises(ValueError, match=r"budget 1000000000 .*2\*\*24"):
        AskConfig(budget=10**9)
    assert AskConfig(budget=2**23).memory == MAX_MEMORY_TOKENS  # 4 x budget, capped


# ---------------------------------------------------------------- AskConfig fields
@pytest.mark.parametrize("kw", [
    dict(max_frames=2.5), dict(thumbnails=-1), dict(seed="x"), dict(seed=1.5), dict(budget=2.0), dict(budget=True),
    dict(budget="8"), dict(budget=None), dict(memory="x"), dict(memory=math.inf), dict(fps=math.inf),
    dict(fps=math.nan), dict(fps=None), dict(fps="1"), dict(fps=True), dict(alpha=math.inf), dict(alpha="0.3"),
    dict(max_new_tokens=None), dict(max_new_tokens=1.0), dict(method=None), dict(method=["ours"]), dict(mode=3),
    dict(decoder_prune="yes"), dict(decode_headroom=0.5), dict(decode_headroom="2"), dict(selector_kw=None),
    dict(thumbnails=None),
])
def test_askconfig_rejects_with_one_line_value_errors(kw):
    with pytest.raises(ValueError) as e:  # never TypeError / OverflowError
        AskConfig(**kw)
    assert "\n" not in str(e.value) and next(iter(kw)) in str(e.value)


def test_askconfig_takes_numpy_numbers():
    cfg = AskConfig(budget=np.int64(8), memory=np.int32(32), fps=np.float32(2.0), max_frames=np.int16(3), seed=7)
    assert (cfg.budget, cfg.memory, cfg.fps, cfg.max_frames) == (8, 32, 2.0, 3)
    assert type(cfg.budget) is int and type(cfg.fps) is float


# ---------------------------------------------------------------- cheap checks before the model
def test_python_ask_checks_the_path_and_question_before_loading(video, tmp_path, monkeypatch):
    import streamprune.models as models

    def no_load(*a, **k):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(models, "load_model", no_load)
    with pytest.raises(ValueError, match="no such file"):
        ask(tmp_path / "missing.mp4", "What?", model="/no/such/model")
    with pytest.raises(ValueError, match="question"):
        ask(video, "  ", model="/no/such/model")
    with pytest.raises(ValueError, match="is a directory"):
        ask(tmp_path, "What?", model="/no/such/model")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 100)
    with pytest.raises(ValueError):
        ask(bad, "What?", model="/no/such/model")
    with pytest.raises(ModelLoadError, match="device"):
        ask(video, "What?", model="/no/such/model", device="banana")
    with pytest.raises(ValueError, match="png"):
        ask(video, "What?", model="/no/such/model", save_kept=tmp_path / "k.jpg")
    with pytest.raises(ValueError, match="max_frames"):
        ask(video, "What?", model="/no/such/model", max_frames=2.5)


def test_stop_answers_from_what_was_read(tiny, video):
    seen = []
    pipe = Pipeline(tiny, AskConfig(budget=8, memory=32, max_new_tokens=2))
    run_video(pipe, video, progress=lambda stage, done, total: seen.append(done), stop=lambda: len(seen) >= 3)
    a = pipe.ask("Where is the box?")
    assert pipe.interrupted and a.interrupted and a.to_dict()["interrupted"] is True
    assert a.frames == 3 and a.span == (0.0, 2.0)  # 3 frames at 1 fps of a 10 s clip
    full = ask(video, "Where is the box?", model=tiny, budget=8, memory=32, max_new_tokens=2)
    assert not full.interrupted and full.frames == 10


def test_stop_before_any_frame_is_an_interrupt(tiny, video):
    import threading

    ev = threading.Event()
    ev.set()
    pipe = Pipeline(tiny, AskConfig(budget=8))
    with pytest.raises(KeyboardInterrupt):
        run_video(pipe, video, stop=ev)


# ---------------------------------------------------------------- devices, attention, loading
@pytest.mark.parametrize("device, needle", [("banana", "unknown device"), ("cuda:x", "unknown device"),
                                             ("meta", "meta"), ("", "unknown device"), (1.5, "unknown device")])
def test_bad_devices_are_one_line_model_load_errors(device, needle):
    with pytest.raises(ModelLoadError, match=needle) as e:
        parse_device(device)
    assert "\n" not in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_refused_before_reading_the_model(tmp_path):
    with pytest.raises(ModelLoadError, match="CUDA"):
        load_model(tmp_path / "missing", device="cuda")  # the device error, not the missing folder
    assert parse_device("cpu") == torch.device("cpu") and parse_device(None) is None


def test_attn_names():
    assert check_attn(None) is None and check_attn("eager") == "eager" and check_attn("kernels-community/x")
    with pytest.raises(ModelLoadError, match="unknown attention"):
        check_attn("bogus")


def test_truncated_weights_and_missing_tokenizer_are_model_load_errors(tmp_path):
    import shutil

    src = write_tiny_model("qwen2_vl", tmp_path / "q")
    cut = shutil.copytree(src, tmp_path / "cut")
    w = cut / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="cannot load") as e:  # was: safetensors' SafetensorError
        load_model(cut)
    assert "\n" not in str(e.value)
    notok = shutil.copytree(src, tmp_path / "notok")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (notok / f).unlink(missing_ok=True)
    with pytest.raises(ModelLoadError, match="tokenizer"):
        load_model(notok)


def test_offline_first_run_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as e:
        load_model("no-such-org/no-such-model-xyz")
    msg = str(e.value)
    assert "offline" in msg and "--model DIR" in msg and "streamprune tiny-model qwen2_vl DIR" in msg


# ---------------------------------------------------------------- nouns
STOP_QUESTIONS = ["of of of", "Of?", "what of it", "the of and", "Is it?", "Why?", "who did what to whom",
                  "What is this about?", "was there any of them"]


@pytest.mark.parametrize("q", STOP_QUESTIONS)
def test_stop_word_questions_give_no_nouns(q):
    assert nouns_mod.extract_nouns(q) == [] and nouns_mod.extract_nouns(q, use_spacy=False) == []


def test_a_tagger_calling_function_words_nouns_is_filtered(monkeypatch):
    """Whatever the tagger says ("of" tagged NOUN, as small spaCy models do on stop-word questions), stop
    words and function words never come back as nouns."""
    def fake_nlp(text):
        return [types.SimpleNamespace(text=w, pos_="NOUN") for w in text.replace("?", " ").split()]

    monkeypatch.setattr(nouns_mod, "load_nlp", lambda: fake_nlp)
    assert nouns_mod.extract_nouns("of the dog of") == ["dog"]
    assert nouns_mod.extract_nouns("Of of the?") == []
    assert nouns_mod.extract_nouns("what color is the car 42") == ["car"]
