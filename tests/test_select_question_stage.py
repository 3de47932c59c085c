"""The question stage reuses what the selector already holds: one memory copy per state (shared by `memory`,
`final` and the pipeline's relevance), the question-agnostic `final` answered once per state and k, and every
method honours the question-stage options (mode, alpha) it is given."""

from __future__ import annotations

import pytest
import torch

import streamprune.select.streaming as streaming
from streamprune.models import load_model, write_tiny_model
from streamprune.pipeline import AskConfig, Pipeline, run_video
from streamprune.select import METHODS, StreamingSelector, final_select, make_selector, question_select

from streamprune.bench.clips import write_box_clip as make_video


def fed(method="subspace", K=48, d=32, blocks=12, **kw):
    g = torch.Generator().manual_seed(0)
    sel = make_selector(method, K, **kw)
    for b in range(blocks):
        sel.push(torch.randn(16, d, generator=g), float(b))
    return sel


def test_memory_is_one_copy_per_state():
    sel = fed()
    m1, m2 = sel.memory, sel.memory
    assert m1 is m2  # no second gather
    sel.push(torch.randn(16, 32), 99.0)
    m3 = sel.memory
    assert m3 is not m1 and int(m3.ids.max()) > int(m1.ids.max())
    sel.push(torch.zeros(0, 32), 100.0)  # an empty block changes nothing
    assert sel.memory is m3


@pytest.mark.parametrize("method", ["subspace", "random", "dedup"])
def test_question_agnostic_final_runs_once_per_state_and_k(method, count_calls):
    sel = fed(method)
    real = streaming.select_subspace
    calls = count_calls(streaming, "select_subspace")
    first = sel.final(10)
    again = sel.final(10)
    assert calls["n"] == 1 and torch.equal(first, again)
    assert torch.equal(first, torch.sort(real(sel.memory.tokens, 10)).values)  # the greedy answer itself
    sel.final(12)
    assert calls["n"] == 2  # another k is another answer
    again[0] = -1  # the caller's copy, not the cache
    assert int(sel.final(10)[0]) >= 0 and calls["n"] == 2
    sel.push(torch.randn(16, 32), 50.0)  # (the push may run greedy itself)
    calls["n"] = 0
    sel.final(10)
    assert calls["n"] == 1  # a push invalidates it


def test_final_with_relevance_is_recomputed_and_matches_question_select():
    sel = fed()
    mem = sel.memory
    rel = torch.linspace(0.05, 1.0, len(mem))
    got = sel.final(8, rel)
    want = torch.sort(question_select(mem.tokens, 8, rel, mode="resprune", alpha=0.3)).values
    assert torch.equal(got, want)
    rel2 = rel.flip(0)
    assert not torch.equal(sel.final(8, rel2), got)  # a different question, a different answer


@pytest.mark.parametrize("method", [m for m in METHODS if m != "window"])
def test_every_method_honours_the_question_mode(method):
    sel = fed(method, question_mode="relevance")
    mem = sel.memory
    rel = torch.rand(len(mem), generator=torch.Generator().manual_seed(1)).clamp_min(0.01)
    top = torch.sort(torch.sort(-rel, stable=True).indices[:6]).values
    assert torch.equal(sel.final(6, rel), top)  # "relevance" = top-k relevance, not the default resprune
    resprune = final_select(mem, 6, rel)
    assert torch.equal(fed(method).final(6, rel), resprune)


def test_bad_question_options_are_one_line_errors():
    with pytest.raises(ValueError, match="question_mode"):
        make_selector("random", 8, question_mode="nope")
    with pytest.raises(ValueError, match="alpha"):
        make_selector("uniform", 8, alpha=float("nan"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_model(str(write_tiny_model("qwen2_vl", tmp_path_factory.mktemp("m") / "q")), device="cpu")


@pytest.mark.parametrize("method", ["subspace", "random"])
def test_a_question_copies_the_memory_once(tiny, tmp_path, count_calls, method):
    video = make_video(tmp_path / "clip.mp4", n_frames=12, rate=2)
    pipe = Pipeline(tiny, AskConfig(budget=8, method=method, mode="spare", max_new_tokens=2))
    run_video(pipe, str(video))
    assert pipe.selector.question_mode == "spare"  # --mode reaches every method
    gathers = count_calls(type(pipe.selector), "_gather")
    pipe.ask("what is the red box doing?")
    assert gathers["n"] == 1  # relevance, final and the LLM's subset all read one snapshot
    pipe.ask("where is the box?")
    assert gathers["n"] == 1  # no push in between: the same snapshot


def test_streaming_selector_memory_matches_its_state():
    sel = fed(K=40, blocks=20)
    mem = sel.memory
    alive = sel._alive.nonzero().reshape(-1)
    assert sorted(mem.ids.tolist()) == sorted(sel._ids[alive].tolist()) and isinstance(sel, StreamingSelector)
