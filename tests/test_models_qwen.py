"""Qwen2-VL / Qwen2.5-VL / Qwen3-VL adapter on tiny random-weight models: pruning,
streaming encode, pinned M-RoPE positions, deepstack."""

import pytest
import torch
import transformers

from streamprune.models import EncodedBlock, load_model, write_tiny_model

transformers.utils.logging.disable_progress_bar()
QWEN = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
Q = "What does the man pick up after the phone rings?"


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_qwen")
    yield {f: load_model(write_tiny_model(f, root / f), device="cpu") for f in QWEN}


def clip(T=8, h=60, w=90, seed=0):
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randint(0, 256, (T, h, w, 3), dtype=torch.uint8, generator=g)
    return imgs, torch.arange(T, dtype=torch.float64) / 2.0  # 2 fps


def stream(adapter, imgs, times):
    blocks = [adapter.encode(imgs[i:i + 2], times[i:i + 2]) for i in range(0, len(imgs), 2)]
    return EncodedBlock(torch.cat([b.tokens for b in blocks]), torch.cat([b.times for b in blocks]),
                        torch.cat([b.payload for b in blocks]))


@pytest.mark.parametrize("family", QWEN)
def test_pruned_prompt_equals_masked_full_prompt(adapters, family):
    a = adapters[family]
    imgs, times = clip(seed=1)
    mem = stream(a, imgs, times)
    n_blocks = 4
    per = len(mem) // n_blocks
    g = torch.Generator().manual_seed(3)
    keep = torch.cat([b * per + torch.randperm(per, generator=g)[: per // 3 + 1] for b in range(n_blocks)]).sort().values
    for positions in ("original", "hf"):
        pruned = a.build_inputs(mem, Q, keep=keep, positions=positions)
        full = a.build_inputs(mem, Q, positions=positions)
        assert int(pruned["visual_mask"].sum()) == len(keep)
        drop = torch.ones(len(mem), dtype=torch.bool)
        drop[keep] = False
        mask = torch.ones_like(full["attention_mask"])
        mask[0, full["visual_mask"][0].nonzero()[:, 0][drop]] = 0
        full["attention_mask"] = mask
        lp, lf = a.logits(pruned)[-1], a.logits(full)[-1]
        torch.testing.assert_close(lp, lf, atol=1e-5, rtol=0)
        # and the dropped tokens did matter: unmasked full prompt differs
        full["attention_mask"] = torch.ones_like(mask)
        assert (a.logits(full)[-1] - lp).abs().max() > 1e-3


def test_qwen3_deepstack_is_sliced_with_the_tokens(adapters):
    a = adapters["qwen3_vl"]
    imgs, times = clip(seed=2)
    mem = stream(a, imgs, times)
    n_ds = len(a.model.config.vision_config.deepstack_visual_indexes)
    assert mem.payload.shape[1] == 6 + n_ds * a.hidden_size
    keep = torch.arange(0, len(mem), 3)
    inp = a.build_inputs(mem, Q, keep=keep)
    deep = inp["mm_encoder_outputs"]["video"].deepstack_features
    assert len(deep) == n_ds
    pix, grid = a.pixel_inputs(imgs)
    _, ref_deep = a.video_features(pix, grid)
    for d, r in zip(deep, ref_deep):
        torch.testing.assert_close(d[0], r[keep], atol=1e-5, rtol=1e-5)
    # deepstack reaches the decoder: zeroing it changes the answer logits
    base = a.logits(inp)[-1]
    for d in deep:
        d[0].zero_()
    assert (a.logits(inp)[-1] - base).abs().max() > 1e-4


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])
def test_streaming_encode_equals_whole_clip(adapters, family):
    a = adapters[family]
    imgs, times = clip(T=6, seed=4)
    pix, grid = a.pixel_inputs(imgs)
    whole, _ = a.video_features(pix, grid)  # (n, d)
    streamed = stream(a, imgs, times).tokens
    torch.testing.assert_close(streamed, whole, atol=1e-6, rtol=1e-6)  # float32 matmul blocking only
    a.model.double()  # in float64 the two agree to round-off: no information crosses temporal patches
    try:
        a.mean, a.std = a.mean.double(), a.std.double()
        whole64, _ = a.video_features(*a.pixel_inputs(imgs))
        s64 = torch.cat([a.video_features(*a.pixel_inputs(imgs[i:i + 2]))[0] for i in range(0, 6, 2)])
        assert (s64 - whole64).abs().max() < 1e-12
    finally:
        a.model.float()
        a.mean, a.std = a.mean.float(), a.std.float()


def _fake_memory(a, n_blocks, gh, gw, fps=2.0):
    n = gh * gw
    tokens = torch.randn(n_blocks * n, a.hidden_size)
    times = torch.cat([torch.full((n,), (2 * b + 0.5) / fps, dtype=torch.float64) for b in range(n_blocks)])
    m = torch.arange(n).repeat(n_blocks)
    cols = [torch.full((len(m),), 1 / fps), torch.full((len(m),), 2.0), (m // gw).float(), (m % gw).float(),
            torch.full((len(m),), float(gh)), torch.full((len(m),), float(gw))]
    payload = torch.stack(cols, 1)
    if a.family == "qwen3_vl":
        payload = torch.cat([payload, torch.zeros(len(m), 2 * a.hidden_size)], 1)
    return EncodedBlock(tokens, times, payload)


def test_qwen2_positions_pinned_both_conventions(adapters):
    a = adapters["qwen2_vl"]
    mem = _fake_memory(a, n_blocks=3, gh=1, gw=2)  # 3 temporal patches of a 1x2 merged grid
    pre, post = a.render_prompt(Q)
    s = len(pre)
    vis = torch.tensor([[0, 0, 1, 1, 2, 2], [0, 0, 0, 0, 0, 0], [0, 1, 0, 1, 0, 1]]) + s
    for conv, after in (("original", s + 3), ("hf", s + 2)):
        pos = a.build_inputs(mem, Q, positions=conv)["position_ids"][:, 0]  # (3, L)
        assert torch.equal(pos[:, :s], torch.arange(s).expand(3, -1))
        assert torch.equal(pos[:, s:s + 6], vis)
        assert torch.equal(pos[:, s + 6:], (torch.arange(len(post)) + after).expand(3, -1))
    # pruning keeps each token's position (gaps stay)
    pos = a.build_inputs(mem, Q, keep=[1, 4], positions="original")["position_ids"][:, 0]
    assert torch.equal(pos[:, s:s + 2], torch.tensor([[0, 2], [0, 0], [1, 0]]) + s)
    assert int(pos[0, s + 2]) == s + 3


def test_qwen2_5_positions_scale_time_by_tokens_per_second(adapters):
    a = adapters["qwen2_5_vl"]
    assert a.tokens_per_second == 2
    mem = _fake_memory(a, n_blocks=3, gh=2, gw=1, fps=2.0)  # second_per_grid_t = 1 s -> t step 2
    pre, post = a.render_prompt(Q)
    s = len(pre)
    vis = torch.tensor([[0, 0, 2, 2, 4, 4], [0, 1, 0, 1, 0, 1], [0, 0, 0, 0, 0, 0]]) + s
    for conv, after in (("original", s + 5), ("hf", s + 2)):
        pos = a.build_inputs(mem, Q, positions=conv)["position_ids"][:, 0]
        assert torch.equal(pos[:, s:s + 6], vis)
        assert torch.equal(pos[:, s + 6:], (torch.arange(len(post)) + after).expand(3, -1))
    mem1 = _fake_memory(a, n_blocks=3, gh=2, gw=1, fps=1.0)  # 2 s per patch -> t step 4
    pos = a.build_inputs(mem1, Q)["position_ids"][0, 0]
    assert pos[s:s + 6].tolist() == [s, s, s + 4, s + 4, s + 8, s + 8]


def test_qwen3_positions_and_timestamps(adapters):
    a = adapters["qwen3_vl"]
    mem = _fake_memory(a, n_blocks=2, gh=1, gw=2)
    inp = a.build_inputs(mem, Q)
    ids, pos = inp["input_ids"][0], inp["position_ids"][:, 0]
    vis = inp["visual_mask"][0].nonzero()[:, 0]
    assert len(vis) == 4
    stamp = a.tokenizer("<0.2 seconds>", add_special_tokens=False)["input_ids"]
    pre, _ = a.render_prompt(Q)
    s = len(pre)
    g0 = s + len(stamp) + 1  # after "<t seconds>" and <|vision_start|>
    assert ids[s:s + len(stamp)].tolist() == stamp and int(ids[g0 - 1]) == a.vision_start_id
    assert torch.equal(pos[:, vis[:2]], torch.tensor([[g0, g0], [g0, g0], [g0, g0 + 1]]))
    assert int(ids[vis[1] + 1]) == a.vision_end_id and int(pos[0, vis[1] + 1]) == g0 + 2
    # dropping a whole temporal patch drops its timestamp and vision_start/end too
    pruned = a.build_inputs(mem, Q, keep=[2, 3])
    assert len(pruned["input_ids"][0]) == len(ids) - (len(stamp) + 2 + 2)
