"""In-decoder pruning (streamprune.models.decoder_prune) on tiny random-weight models."""

from __future__ import annotations

import sys

import pytest
import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.masking_utils import eager_mask

from streamprune.models.decoder_prune import (
    DecoderPruneConfig,
    decoder_prune,
    language_model,
    rater_tokens,
    validate_config,
)

VIDEO = 91
_REF_DROP: dict[int, torch.Tensor] = {}  # layer -> (B, L) bool keys removed for the masked reference


def _ref_attention(module, query, key, value, attention_mask, *args, **kwargs):
    """Eager attention with extra dropped keys from layer K on (the reference for pruning)."""
    eager = sys.modules[type(module).__module__].eager_attention_forward
    drop = _REF_DROP.get(module.layer_idx)
    if drop is not None:
        B, _, q, k = query.shape[0], 1, query.shape[2], key.shape[2]
        if attention_mask is None:
            attention_mask = torch.zeros(B, 1, q, k).masked_fill(~torch.ones(q, k, dtype=torch.bool).tril(k - q), torch.finfo(query.dtype).min)
        attention_mask = attention_mask.masked_fill(drop[:, None, None, :k], torch.finfo(query.dtype).min)
    return eager(module, query, key, value, attention_mask, *args, **kwargs)


AttentionInterface.register("sp_test_ref", _ref_attention)
AttentionMaskInterface.register("sp_test_ref", eager_mask)


def _text_model(layers=4, seed=0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(hidden_size=64, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=128, vocab_size=96, max_position_embeddings=512, pad_token_id=0,
                      bos_token_id=1, eos_token_id=2, attn_implementation="sdpa")
    return Qwen2ForCausalLM(cfg).eval()


def _qwen2vl(seed=0):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(seed)
    cfg = Qwen2VLConfig(
        text_config=dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=128, vocab_size=96, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
                         bos_token_id=1, eos_token_id=2),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=4, patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2),
        image_token_id=90, video_token_id=VIDEO, vision_start_token_id=92, vision_end_token_id=93,
        attn_implementation="sdpa")
    return Qwen2VLForConditionalGeneration(cfg).eval()


def _qwen3vl(seed=0):
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    torch.manual_seed(seed)
    cfg = Qwen3VLConfig(
        text_config=dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         intermediate_size=128, vocab_size=96, bos_token_id=1, eos_token_id=2,
                         rope_scaling={"rope_type": "default", "mrope_section": [2, 3, 3], "mrope_interleaved": True}),
        vision_config=dict(depth=2, hidden_size=32, out_hidden_size=64, num_heads=4, intermediate_size=64, patch_size=16,
                           spatial_merge_size=2, temporal_patch_size=2, deepstack_visual_indexes=[0, 1],
                           num_position_embeddings=64),
        image_token_id=90, video_token_id=VIDEO, vision_start_token_id=92, vision_end_token_id=93,
        attn_implementation="sdpa")
    return Qwen3VLForConditionalGeneration(cfg).eval()


def _llava(seed=0):
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    cfg = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, image_size=56, patch_size=14, projection_dim=32),
        text_config=dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=96, bos_token_id=1, eos_token_id=2),
        image_token_id=VIDEO, attn_implementation="sdpa")
    return LlavaForConditionalGeneration(cfg).eval()


def _llava_inputs(seed=3):
    g = torch.Generator().manual_seed(seed)
    ids = torch.cat([torch.tensor([5, 6, 7]), torch.full((16,), VIDEO), torch.randint(3, 80, (6,), generator=g)])[None]
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=torch.randn(1, 3, 56, 56, generator=g))


def _prompt(n_text_before=6, n_vis=24, n_text_after=10, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.cat([torch.randint(3, 80, (n_text_before,), generator=g), torch.randint(3, 80, (n_vis,), generator=g),
                     torch.randint(3, 80, (n_text_after,), generator=g)])
    vis = torch.zeros(ids.numel(), dtype=torch.bool)
    vis[n_text_before:n_text_before + n_vis] = True
    return ids[None], vis[None]


def _drop_masks(stats, visual_mask, n_layers, total_len):
    """layer -> (B, total_len) bool: visual keys removed at that layer (the keep sets of stats)."""
    B, L = visual_mask.shape
    out, cur = {}, None
    for layer in range(n_layers):
        if layer in stats.keep_index:
            cur = visual_mask.clone()
            for b in range(B):
                cur[b, stats.keep_index[layer][b]] = False
            cur = torch.cat([cur, cur.new_zeros(B, total_len - L)], dim=1)
        if cur is not None:
            out[layer] = cur
    return out


def _reference(model, drop, **inputs):
    cfg = language_model(model).config
    old = cfg._attn_implementation
    _REF_DROP.clear()
    _REF_DROP.update(drop)
    try:
        cfg._attn_implementation = "sp_test_ref"
        with torch.no_grad():
            return model(**inputs, use_cache=False).logits
    finally:
        cfg._attn_implementation = old
        _REF_DROP.clear()


def _kept_slots(stats, visual_mask, b):
    last = max(stats.keep_index)
    keep = ~visual_mask[b]
    keep[stats.keep_index[last][b]] = True
    return keep.nonzero().squeeze(1)


# ---------------------------------------------------------------- raters and side scores

def test_rater_rule_picks_text_tokens_the_visual_tokens_attend_to():
    d = 8
    emb = torch.zeros(6, d)
    emb[0, 0] = emb[1, 1] = 5.0  # visual tokens along axes 0 and 1
    emb[2, 0], emb[3, 1], emb[4, 5], emb[5, 6] = 3.0, 3.0, 3.0, 3.0  # text: two aligned, two orthogonal
    vis = torch.tensor([1, 1, 0, 0, 0, 0], dtype=torch.bool)
    assert rater_tokens(emb, vis, ~vis).tolist() == [2, 3]
    flat = torch.zeros(6, d)  # r flat: every text token rates
    assert rater_tokens(flat, vis, ~vis).tolist() == [2, 3, 4, 5]


@pytest.mark.parametrize("layers", [(1,), (2,)])
def test_side_scores_equal_eager_attention_of_rater_rows(layers):
    model = _text_model()
    ids, vis = _prompt()
    with torch.no_grad(), decoder_prune(model, DecoderPruneConfig(layers=layers, keep=(0.5,)), vis) as st:
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    k = layers[0]
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        att = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True).attentions[k - 1]  # (1, H, L, L)
    model.config._attn_implementation = "sdpa"
    raters = st.raters[0]
    assert 0 < raters.numel() < (~vis).sum()
    assert not vis[0, raters].any()
    want = att[0][:, raters][:, :, vis[0]].mean(0).mean(0)  # (n_v,)
    assert st.scored_index[k][0].tolist() == vis[0].nonzero().squeeze(1).tolist()
    torch.testing.assert_close(st.scores[k][0], want, atol=1e-6, rtol=0)
    # the kept set is the top half by score
    order = torch.sort(-want, stable=True).indices[:12]
    assert st.keep_index[k][0].tolist() == sorted(st.scored_index[k][0][order].tolist())
    assert st.kept[k] == [12]


# ---------------------------------------------------------------- exactness of the pruned forward

@pytest.mark.parametrize("cfg", [DecoderPruneConfig(layers=(2,), keep=(0.5,)),
                                 DecoderPruneConfig(layers=(1, 3), keep=(0.5, 5)),
                                 DecoderPruneConfig(layers=(1,), rank_adaptive=True, lam=0.5)])
def test_pruned_forward_equals_masked_reference(cfg):
    model = _text_model()
    ids, vis = _prompt()
    am = torch.ones_like(ids)
    with torch.no_grad(), decoder_prune(model, cfg, vis) as st:
        out = model(input_ids=ids, attention_mask=am).logits
    slots = _kept_slots(st, vis, 0)
    assert out.shape[1] == slots.numel() < ids.shape[1]
    if len(cfg.layers) == 2:
        assert st.kept == {1: [12], 3: [5]}
    ref = _reference(model, _drop_masks(st, vis, 4, ids.shape[1]), input_ids=ids, attention_mask=am)
    torch.testing.assert_close(out[0], ref[0, slots], atol=1e-5, rtol=0)
    # not trivially equal: the unpruned model gives other logits at the last position
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=am).logits
    assert (full[0, -1] - out[0, -1]).abs().max() > 1e-4


def test_rank_adaptive_count_follows_rank_rule():
    model = _text_model()
    ids, vis = _prompt()
    with torch.no_grad(), decoder_prune(model, DecoderPruneConfig(layers=(2,), rank_adaptive=True, lam=0.5), vis) as st:
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        att = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True).attentions[1]
    model.config._attn_implementation = "sdpa"
    P = att[0][:, st.raters[0]][:, :, vis[0]].mean(0)  # (R, n_v)
    n_v = int(vis.sum())
    want = n_v - int(0.5 * (n_v - int(torch.linalg.matrix_rank(P))))
    assert st.kept[2] == [want]


# ---------------------------------------------------------------- generation

def _generate(model, ids, am, vis, cfg, n=5, **kw):
    with torch.no_grad(), decoder_prune(model, cfg, vis) as st:
        g = model.generate(input_ids=ids, attention_mask=am, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                           output_logits=True, return_dict_in_generate=True, **kw)
    return g, st


def test_cached_generate_equals_no_cache_recompute_with_same_keep_sets():
    model = _text_model()
    ids, vis = _prompt()
    am = torch.ones_like(ids)
    g, st = _generate(model, ids, am, vis, DecoderPruneConfig(layers=(1, 2), keep=(0.5, 0.5)))
    assert st.prefills == 1 and st.kept == {1: [12], 2: [6]}
    seq = g.sequences  # (1, L + 5)
    L = ids.shape[1]
    ref = _reference(model, _drop_masks(st, vis, 4, seq.shape[1]), input_ids=seq, attention_mask=torch.ones_like(seq))
    got = torch.stack(g.logits, 1)[0]  # (5, V)
    torch.testing.assert_close(got, ref[0, L - 1:seq.shape[1] - 1], atol=1e-5, rtol=0)


def test_batch_with_left_padding_equals_each_alone():
    model = _text_model()
    a, va = _prompt(6, 24, 10, seed=1)
    b, vb = _prompt(3, 24, 7, seed=2)  # same visual count, shorter text
    pad = a.shape[1] - b.shape[1]
    ids = torch.cat([a, torch.cat([torch.zeros(1, pad, dtype=torch.long), b], 1)])
    am = torch.ones_like(ids)
    am[1, :pad] = 0
    vis = torch.cat([va, torch.cat([torch.zeros(1, pad, dtype=torch.bool), vb], 1)])
    for cfg in (DecoderPruneConfig(layers=(2,), keep=(0.25,)),
                DecoderPruneConfig(layers=(1, 3), keep=(0.5, 0.5), recycle=True)):
        g, st = _generate(model, ids, am, vis, cfg, n=3, pad_token_id=0)
        for i, (x, v) in enumerate(((a, va), (b, vb))):
            g1, st1 = _generate(model, x, torch.ones_like(x), v, cfg, n=3, pad_token_id=0)
            off = 0 if i == 0 else pad
            for k in st1.keep_index:
                assert (st.keep_index[k][i] - off).tolist() == st1.keep_index[k][0].tolist()
            torch.testing.assert_close(torch.stack(g.logits, 1)[i], torch.stack(g1.logits, 1)[0], atol=2e-5, rtol=0)


def test_batch_with_different_keep_counts_is_rejected():
    model = _text_model()
    a, va = _prompt(6, 24, 10)
    vb = va.clone()
    vb[0, 6:10] = False  # 20 visual tokens in the second sample
    with pytest.raises(ValueError, match="same number"), decoder_prune(model, DecoderPruneConfig(), torch.cat([va, vb])):
        model(input_ids=torch.cat([a, a]))


# ---------------------------------------------------------------- recycling

def test_recycling_is_deterministic_and_adds_merged_tokens():
    model = _text_model()
    ids, vis = _prompt(6, 40, 10)
    am = torch.ones_like(ids)
    cfg = DecoderPruneConfig(layers=(2,), keep=(0.25,), recycle=True, recycle_frac=0.5, recycle_clusters=0.25)
    outs = []
    for _ in range(2):
        with torch.no_grad(), decoder_prune(model, cfg, vis) as st:
            outs.append(model(input_ids=ids, attention_mask=am).logits)
    torch.testing.assert_close(outs[0], outs[1], atol=0, rtol=0)
    # 10 kept, 30 dropped -> 15 recycled -> 4 merged tokens after the visual span
    assert st.recycled == {2: [4]} and st.kept == {2: [14]}
    assert outs[0].shape[1] == 16 + 14
    with torch.no_grad(), decoder_prune(model, DecoderPruneConfig(layers=(2,), keep=(0.25,)), vis):
        plain = model(input_ids=ids, attention_mask=am).logits
    assert plain.shape[1] == 16 + 10
    assert (plain[0, -1] - outs[0][0, -1]).abs().max() > 1e-5  # the merged tokens reach the answer
    # cached generation works with merged tokens (decode steps attend to the shorter caches)
    g, _ = _generate(model, ids, am, vis, cfg, n=3)
    assert g.sequences.shape[1] == ids.shape[1] + 3


# ---------------------------------------------------------------- VLM families

def _video_inputs(model, groups=1, per=8, seed=3):
    """One video: `groups` placeholder groups of `per` tokens (Qwen3-VL separates temporal patches by text)."""
    g = torch.Generator().manual_seed(seed)
    parts = [torch.tensor([5, 6, 7])]
    for _ in range(groups):
        parts += [torch.tensor([92]), torch.full((per,), VIDEO), torch.tensor([93, 8])]
    parts.append(torch.randint(3, 80, (6,), generator=g))
    ids = torch.cat(parts)[None]
    p = model.config.vision_config.patch_size
    grid = torch.tensor([[2 if groups == 1 else groups, 4, 4]])  # (t, h, w) patches; 4 tokens per t
    pix = torch.randn(int(grid.prod()), 3 * 2 * p * p, generator=g)
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values_videos=pix, video_grid_thw=grid,
                mm_token_type_ids=(ids == VIDEO).long() * 2)


@pytest.mark.parametrize("family", ["qwen2vl", "qwen3vl", "llava"])
def test_vlm_pruned_forward_and_generate(family):
    if family == "llava":
        model, inputs = _llava(), _llava_inputs()
    else:
        model = _qwen2vl() if family == "qwen2vl" else _qwen3vl()
        inputs = _video_inputs(model, groups=1 if family == "qwen2vl" else 2, per=8 if family == "qwen2vl" else 4)
    vis = inputs["input_ids"] == VIDEO
    text_cfg = model.config.text_config
    vision_attn = model.config.vision_config._attn_implementation
    cfg = DecoderPruneConfig(layers=(2,), keep=(3,))
    with torch.no_grad(), decoder_prune(model, cfg, vis) as st:
        assert text_cfg._attn_implementation.startswith("streamprune_side_")
        assert model.config.vision_config._attn_implementation == vision_attn  # vision tower untouched
        out = model(**inputs).logits
    assert text_cfg._attn_implementation == "sdpa"
    assert all(len(layer._forward_pre_hooks) == 0 for layer in language_model(model).layers)
    assert st.kept == {2: [3]}
    slots = _kept_slots(st, vis, 0)
    ref = _reference(model, _drop_masks(st, vis, 4, vis.shape[1]), **inputs)
    torch.testing.assert_close(out[0], ref[0, slots], atol=1e-5, rtol=0)
    # cached generate: decode positions continue the unpruned M-RoPE positions
    g, st = _generate(model, inputs.pop("input_ids"), inputs.pop("attention_mask"), vis, cfg, n=4, **inputs)
    seq = g.sequences
    full = dict(inputs, input_ids=seq, attention_mask=torch.ones_like(seq))
    if "mm_token_type_ids" in inputs:
        full["mm_token_type_ids"] = (seq == VIDEO).long() * 2
    ref = _reference(model, _drop_masks(st, vis, 4, seq.shape[1]), **full)
    L = vis.shape[1]
    torch.testing.assert_close(torch.stack(g.logits, 1)[0], ref[0, L - 1:seq.shape[1] - 1], atol=1e-5, rtol=0)


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("kw", [dict(layers=(0,)), dict(layers=(4,)), dict(layers=(3, 2)), dict(layers=()),
                                dict(keep=(0,)), dict(keep=(-1,)), dict(keep=(0.0,)), dict(keep=(1.5,)),
                                dict(layers=(1, 2), keep=(0.5, 0.5, 0.5)), dict(keep=(True,)),
                                dict(recycle=True, recycle_frac=0.0), dict(lam=0.0)])
def test_invalid_configs_raise(kw):
    model = _text_model()
    ids, vis = _prompt()
    with pytest.raises(ValueError):
        with decoder_prune(model, DecoderPruneConfig(**kw), vis):
            pass
    assert model.config._attn_implementation == "sdpa"


def test_qwen3vl_layer_before_deepstack_is_rejected():
    model = _qwen3vl()
    vis = torch.zeros(1, 10, dtype=torch.bool)
    with pytest.raises(ValueError, match="deepstack"):
        with decoder_prune(model, DecoderPruneConfig(layers=(1,)), vis):
            pass
    with decoder_prune(model, DecoderPruneConfig(layers=(2,)), vis):
        pass
    assert validate_config(DecoderPruneConfig(layers=(2, 3), keep=(0.5,)), 4, 2) == (0.5, 0.5)


def test_bad_visual_mask_and_nesting_raise():
    model = _text_model()
    ids, vis = _prompt()
    with pytest.raises(ValueError, match="visual_mask"):
        with decoder_prune(model, DecoderPruneConfig(), vis.long()):
            pass
    with decoder_prune(model, DecoderPruneConfig(), vis):
        with pytest.raises(ValueError, match="already active"):
            with decoder_prune(model, DecoderPruneConfig(), vis):
                pass


def test_decoder_suite_rejects_bad_arguments(tmp_path):
    from streamprune.bench import decoder_suite, suites

    def opts(**given):
        return suites.options("decoder", given={k: str(v) for k, v in given.items()}, out=tmp_path, quick=True)

    with pytest.raises(ValueError, match="unknown arm"):
        decoder_suite.plan(opts(arms="sdpa,bogus"))
    with pytest.raises(ValueError, match="prune_layer must be in 1..3"):
        decoder_suite.plan(opts(prune_layer=4, layers=4))


@pytest.mark.parametrize("family", ["qwen2_vl", "video_llava"])
def test_through_adapter_inputs_with_explicit_positions(tmp_path, family):
    """The product path: Adapter.build_inputs (explicit, gapped positions + mm_encoder_outputs)."""
    from streamprune.models import EncodedBlock, load_model, write_tiny_model

    a = load_model(write_tiny_model(family, tmp_path / family), device="cpu")
    g = torch.Generator().manual_seed(0)
    T = 2 * a.frames_per_block
    imgs = torch.randint(0, 256, (T, 60, 90, 3), dtype=torch.uint8, generator=g)
    times = torch.arange(T, dtype=torch.float64) / 2
    blocks = [a.encode(imgs[i:i + a.frames_per_block], times[i:i + a.frames_per_block])
              for i in range(0, T, a.frames_per_block)]
    mem = EncodedBlock(*(torch.cat([getattr(b, f) for b in blocks]) for f in ("tokens", "times", "payload")))
    inputs = a.build_inputs(mem, "what is on the table")
    vis = inputs.pop("visual_mask")
    n_layers = len(language_model(a.model).layers)
    cfg = DecoderPruneConfig(layers=(n_layers - 1,), keep=(0.5,))
    with torch.no_grad(), decoder_prune(a.model, cfg, vis) as st:
        out = a.model(**inputs, use_cache=False).logits
    k = n_layers - 1
    assert st.kept[k] == [round(0.5 * int(vis.sum()))]
    ref = _reference(a.model, _drop_masks(st, vis, n_layers, vis.shape[1]), **inputs)
    torch.testing.assert_close(out[0].float(), ref[0, _kept_slots(st, vis, 0)].float(), atol=1e-4, rtol=0)
    ids = a.generate_ids(mem, "what is on the table", max_new_tokens=3, min_new_tokens=3, decoder_prune=cfg)
    assert ids.numel() == 3 and a.last_prune_stats.kept[k] == st.kept[k]


@pytest.mark.parametrize("name", ["cache", "past_key_values"])
def test_layer_cache_is_read_under_either_transformers_name(name):
    """5.24 calls decoder layers with `cache=`, 5.23 with `past_key_values=`: both are prefill/decode signals."""
    from transformers.cache_utils import DynamicCache

    from streamprune.models.decoder_prune import layer_cache

    c = DynamicCache()
    assert layer_cache({name: c, "attention_mask": None}) is c
    assert layer_cache({name: None}) is None
    assert layer_cache({}) is None


def test_installed_decoder_layers_take_a_cache_name_we_read():
    """The installed transformers' decoder layer signature names its cache argument one of the names we read."""
    import inspect

    from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

    from streamprune.models.decoder_prune import CACHE_KWARGS

    params = inspect.signature(Qwen2DecoderLayer.forward).parameters
    assert any(n in params for n in CACHE_KWARGS), list(params)
