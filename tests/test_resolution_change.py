"""A resolution change mid-stream (adaptive bitrate, camera reconfiguration): a new block starts at the change,
each block is encoded at its own size, and the prompt gives every token its own block's grid position."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamprune.models import load_model, write_tiny_model
from streamprune.pipeline import AskConfig, Pipeline, ask, run_video
from streamprune.readers import open_video
from streamprune.bench.clips import green_level, write_ts_segments

SMALL, LARGE = (320, 240), (640, 360)  # (w, h)
N1, N2 = 5, 6  # odd first segment: a 2-frame block would straddle the change


@pytest.fixture(scope="module")
def vdir(tmp_path_factory):
    return tmp_path_factory.mktemp("resolution")


@pytest.fixture(scope="module")
def mixed(vdir):
    return write_ts_segments(vdir / "mixed.ts", [(*SMALL, N1), (*LARGE, N2)])


@pytest.fixture(scope="module")
def mixed_restart(vdir):  # `cat a.ts b.ts`: the second segment's timestamps start again at 0
    return write_ts_segments(vdir / "mixed0.ts", [(*SMALL, N1), (*LARGE, N2)], restart=True)


_ADAPTERS = {}


def adapter(family, tmp_path_factory):
    if family not in _ADAPTERS:
        _ADAPTERS[family] = load_model(write_tiny_model(family, tmp_path_factory.mktemp(family)), device="cpu")
    return _ADAPTERS[family]


def test_reader_decodes_both_sizes_with_times_in_order(mixed, mixed_restart):
    for path in (mixed, mixed_restart):
        with open_video(path) as r:
            frames = list(r)
        shapes = [f.image.shape for f in frames]
        assert shapes == [(SMALL[1], SMALL[0], 3)] * N1 + [(LARGE[1], LARGE[0], 3)] * N2, path.name
        times = [f.time for f in frames]
        assert np.allclose(np.diff(times), 0.1, atol=1e-6), (path.name, times)  # a reset continues the clock
        assert [round(green_level(f.image) / 8) for f in frames] == list(range(N1 + N2))
        assert [f.index for f in frames] == list(range(N1 + N2))


def _grid(ad, h, w, n_frames):
    fh, fw = ad.frame_size(h, w, n_frames)
    f = ad.patch * ad.merge
    return fh // f, fw // f


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_qwen_answers_and_positions_follow_each_blocks_grid(family, mixed, mixed_restart, tmp_path_factory, tmp_path):
    ad = adapter(family, tmp_path_factory)
    n = N1 + N2
    for path in (mixed, mixed_restart):
        a = ask(path, "what is the man holding?", model=ad, fps=10, budget=4096, max_new_tokens=3,
                save_kept=tmp_path / "kept.png")
        assert isinstance(a.text, str) and a.frames == n and a.span == pytest.approx((0.0, 1.0))
        assert (tmp_path / "kept.png").stat().st_size > 0

    # nothing pruned: every token of every block reaches the prompt
    pipe = Pipeline(ad, AskConfig(fps=10, budget=4096, method="uniform"))
    run_video(pipe, mixed)
    mem = pipe.selector.memory
    assert len(mem) == pipe.tokens_seen
    small, large = _grid(ad, SMALL[1], SMALL[0], n), _grid(ad, LARGE[1], LARGE[0], n)
    assert small != large
    # blocks: (0, 1) (2, 3) (4, padded: the change starts a new block) | (5, 6) (7, 8) (9, 10)
    block_times = [0.05, 0.25, 0.4, 0.55, 0.75, 0.95]
    grids = [small] * 3 + [large] * 3
    times = torch.unique(mem.times)
    assert times.tolist() == pytest.approx(block_times)
    inp = ad.build_inputs(mem, "what is the man holding?")
    ids, pos, vis = inp["input_ids"][0], inp["position_ids"][:, 0], inp["visual_mask"][0]  # (L,) (3, L) (L,)
    where = vis.nonzero().flatten()  # visual placeholders in memory order
    assert len(where) == len(mem)
    prev_t, prev_end = None, None
    for bt, (gh, gw) in zip(block_times, grids):
        rows = (mem.times - bt).abs().lt(1e-9).nonzero().flatten()
        assert len(rows) == gh * gw  # the block was encoded at its own size
        p = pos[:, where[rows]]  # (3, gh*gw)
        ii, jj = np.divmod(np.arange(gh * gw), gw)
        if family == "qwen3_vl":  # one vision group per block, positions from the group's start
            vs = p[0]
            assert (vs == vs[0]).all()
            assert (p[1] - vs).tolist() == ii.tolist() and (p[2] - vs).tolist() == jj.tolist()
            end = int(where[rows][-1]) + 1  # <|vision_end|> right after the group
            assert int(ids[end]) == ad.vision_end_id and int(pos[0, end]) == int(vs[0]) + max(gh, gw)
            if prev_end is not None:
                assert int(vs[0]) > prev_end
            prev_end = int(pos[0, end])
        else:
            start = int(pos[1, where[0]])  # block 0's (0, 0)
            t = p[0] - start
            assert (t == t[0]).all()
            assert (p[1] - start).tolist() == ii.tolist() and (p[2] - start).tolist() == jj.tolist()
            if prev_t is not None:  # temporal positions keep the blocks' time order (Qwen2.5-VL: in
                # units of 1 / tokens_per_second, so 0.2 s blocks may share one)
                assert int(t[0]) > prev_t if family == "qwen2_vl" else int(t[0]) >= prev_t
            prev_t = int(t[0])


@pytest.mark.parametrize("family", ["video_llava", "llava_onevision"])
def test_llava_answers_on_mixed_resolution(family, mixed, tmp_path_factory):
    ad = adapter(family, tmp_path_factory)
    a = ask(mixed, "what is the man holding?", model=ad, fps=10, budget=4096, method="uniform", max_new_tokens=3)
    per = ad.tokens_per_frame()
    assert isinstance(a.text, str) and a.frames == N1 + N2 and a.tokens_seen == (N1 + N2) * per
    assert a.tokens_to_llm == a.tokens_seen


def test_push_frames_flushes_a_partial_block_at_a_size_change(mixed, tmp_path_factory):
    ad = adapter("qwen2_vl", tmp_path_factory)
    pipe = Pipeline(ad, AskConfig(fps=10, budget=4096, method="uniform"))
    with open_video(mixed) as r:
        frames = list(r)
    pipe.push_frames(frames[:N1])  # 2 blocks + 1 pending frame
    assert pipe.blocks == 2 and len(pipe.pending) == 1
    pipe.push_frames(frames[N1:N1 + 1])  # the first large frame: the small one goes alone
    assert pipe.blocks == 3 and [f.index for f in pipe.pending] == [N1]
    pipe.push_frames(frames[N1 + 1:])
    pipe.flush()
    assert pipe.blocks == 6 and pipe.frames_seen == N1 + N2
