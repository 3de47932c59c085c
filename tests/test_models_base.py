"""Registry, load errors, tiny writer, embed_words, input validation, decoder-stage hook-up."""

import json

import pytest
import torch
import transformers

from streamprune.models import FAMILIES, EncodedBlock, ModelLoadError, load_model, write_tiny_model
from streamprune.models.tiny import PRESETS, preset_config

transformers.utils.logging.disable_progress_bar()


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    return load_model(write_tiny_model("qwen2_vl", tmp_path_factory.mktemp("tiny") / "q"), device="cpu")


def _one_line(e):
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


def test_load_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as e:
        load_model(tmp_path / "missing")
    assert "no such folder" in _one_line(e)
    with pytest.raises(ModelLoadError) as e:
        load_model(tmp_path)
    assert "no config.json" in _one_line(e)
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError) as e:
        load_model(tmp_path / "bert")
    assert "unsupported architecture 'bert'" in _one_line(e)
    with pytest.raises(ModelLoadError) as e:
        load_model("no-such-org/no-such-model-xyz")
    assert "not in the Hugging Face cache (offline?)" in _one_line(e)
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ModelLoadError) as e:
        load_model(f)
    assert "not a model folder" in _one_line(e)
    assert issubclass(ModelLoadError, ValueError)


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_models_load_through_load_model(tmp_path, family):
    a = load_model(write_tiny_model(family, tmp_path / family), device="cpu", dtype="float32")
    assert a.is_tiny and a.family == family and a.hidden_size == 64
    assert a.device.type == "cpu" and a.dtype == torch.float32
    assert a.frames_per_block == (2 if family.startswith("qwen") else 1)
    blk = a.encode(torch.zeros(a.frames_per_block, 40, 50, 3, dtype=torch.uint8), torch.arange(a.frames_per_block) * 0.5)
    assert blk.tokens.shape[1] == 64 and blk.times.dtype == torch.float64
    assert len(blk.payload) == len(blk.tokens) == len(blk.times)
    with pytest.raises(ValueError):
        write_tiny_model("gpt2", tmp_path / "x")


def test_embed_words_means_subword_embeddings(qwen):
    table = qwen.model.get_input_embeddings().weight
    tok = qwen.tokenizer
    e = qwen.embed_words(["phone", "phone-rings"])
    assert e.shape == (2, 64) and e.dtype == torch.float32
    torch.testing.assert_close(e[0], table[tok.convert_tokens_to_ids("phone")])
    pieces = tok.convert_tokens_to_ids(["phone", "-", "rings"])
    torch.testing.assert_close(e[1], table[pieces].mean(0))
    with pytest.raises(ValueError):
        qwen.embed_words([" "])


def test_input_validation(qwen):
    blk = qwen.encode(torch.zeros(2, 40, 50, 3, dtype=torch.uint8), [0.0, 0.5])
    with pytest.raises(ValueError, match="frames"):
        qwen.encode(torch.zeros(3, 40, 50, 3, dtype=torch.uint8), [0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="times"):
        qwen.encode(torch.zeros(2, 40, 50, 3, dtype=torch.uint8), [0.0])
    with pytest.raises(ValueError, match="question"):
        qwen.build_inputs(blk, "  ")
    with pytest.raises(ValueError, match="empty"):
        qwen.build_inputs(EncodedBlock(blk.tokens[:0], blk.times[:0], blk.payload[:0]), "what?")
    with pytest.raises(ValueError, match="out of range"):
        qwen.build_inputs(blk, "what?", keep=[len(blk)])
    with pytest.raises(ValueError, match="positions"):
        qwen.build_inputs(blk, "what?", positions="compact")
    with pytest.raises(ValueError, match="max_new_tokens"):
        qwen.generate(blk, "what?", max_new_tokens=0)


def test_decoder_prune_is_applied_inside_generate(qwen):
    from streamprune.models.decoder_prune import DecoderPruneConfig

    imgs = torch.randint(0, 256, (4, 60, 90, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    blocks = [qwen.encode(imgs[i:i + 2], [i / 2, i / 2 + 0.5]) for i in (0, 2)]
    mem = EncodedBlock(*(torch.cat([getattr(b, k) for b in blocks]) for k in ("tokens", "times", "payload")))
    q = "what does the man pick up?"
    plain = qwen.generate_ids(mem, q, max_new_tokens=4, min_new_tokens=4)
    ids = qwen.generate_ids(mem, q, max_new_tokens=4, min_new_tokens=4,
                            decoder_prune=DecoderPruneConfig(layers=(1,), keep=(0.25,)))
    stats = qwen.last_prune_stats
    assert stats is not None and len(ids) == 4
    kept = stats.kept[1][0]
    assert 1 <= kept < len(mem)  # the stage really dropped tokens
    assert qwen.model.model.language_model.config._attn_implementation == "sdpa"  # restored afterwards
    assert torch.equal(qwen.generate_ids(mem, q, max_new_tokens=4, min_new_tokens=4), plain)


def test_presets_are_real_sizes():
    cfg, tok = preset_config("qwen2-vl-7b")
    t = cfg.text_config
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads,
            t.intermediate_size, t.vocab_size) == (3584, 28, 28, 4, 18944, 152064)
    v = cfg.vision_config
    assert (v.depth, v.embed_dim, v.hidden_size) == (32, 1280, 3584)
    assert preset_config("qwen2-vl-2b")[0].text_config.hidden_size == 1536
    assert cfg.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert set(PRESETS) >= {"qwen2-vl-2b", "qwen2-vl-7b"}


def test_presets_parameter_counts_match_the_checkpoints():
    from streamprune.models import build_random_model

    # published sizes of Qwen2-VL-2B-Instruct / Qwen2-VL-7B-Instruct (tied embeddings on 2B)
    for preset, n in (("qwen2-vl-2b", 2_208_985_600), ("qwen2-vl-7b", 8_291_375_616)):
        a = build_random_model(preset, device="meta")
        assert sum(p.numel() for p in a.model.parameters()) == n
        assert a.hidden_size == preset_config(preset)[0].text_config.hidden_size


def test_meta_materialisation_gives_a_working_model(tmp_path):
    from streamprune.models import adapter_for
    from streamprune.models.tiny import _model_class, build_tokenizer, materialize, tiny_config

    tok = build_tokenizer("qwen2_vl")
    cfg = tiny_config("qwen2_vl", tok)
    ref = _model_class(cfg)(cfg)
    with torch.device("meta"):
        model = _model_class(cfg)(cfg)
    model = materialize(model, torch.device("cpu")).eval()
    for (name, b), (_, rb) in zip(model.named_buffers(), ref.named_buffers()):
        torch.testing.assert_close(b, rb, msg=name)  # rotary tables recomputed, not garbage
    a = adapter_for(model, tok, name="meta-tiny")
    blk = a.encode(torch.zeros(2, 56, 56, 3, dtype=torch.uint8), [0.0, 0.5])
    logits = a.logits(a.build_inputs(blk, "what is here?"))
    assert torch.isfinite(logits).all() and len(a.generate(blk, "what is here?", max_new_tokens=2)) >= 0


def test_prefill_gives_the_first_generated_token(qwen):
    blk = qwen.encode(torch.randint(0, 256, (2, 60, 90, 3), dtype=torch.uint8), [0.0, 0.5])
    first = qwen.prefill(blk, "what does the man pick up?")
    ids = qwen.generate_ids(blk, "what does the man pick up?", max_new_tokens=1)
    assert first.shape == (1,) and torch.equal(first, ids)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl", "llava_onevision"])
def test_encode_blocks_batches_like_encode(tmp_path, family):
    a = load_model(write_tiny_model(family, tmp_path / family), device="cpu")
    imgs = torch.randint(0, 256, (4, 60, 90, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    times = torch.arange(4) / 2.0
    batched = a.encode_blocks(imgs, times)
    fpb = a.frames_per_block
    single = [a.encode(imgs[i:i + fpb], times[i:i + fpb]) for i in range(0, 4, fpb)]
    assert len(batched) == len(single) == 4 // fpb
    for b, s in zip(batched, single):
        torch.testing.assert_close(b.tokens, s.tokens, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b.payload, s.payload, atol=1e-5, rtol=1e-5)
        assert torch.equal(b.times, s.times)
    with pytest.raises(ValueError):
        a.encode_blocks(imgs[:3], times[:3]) if fpb == 2 else a.encode_blocks(imgs[:0], times[:0])
