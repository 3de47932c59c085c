"""Tiny random-weight models (tests, offline smoke runs) and real-size random presets (speed/memory benches).

Configs are built in code and tokenizers with the `tokenizers` library (WordLevel), then saved with
`save_pretrained`, so a tiny model loads through the same `load_model(path)` a real checkpoint uses.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .base import CLIP_MEAN, CLIP_STD, HALF, TINY_MARKER
from .loading import default_device, default_dtype, parse_dtype
from .registry import adapter_class, adapter_for

__all__ = ["FAMILIES", "LAYOUTS", "PRESETS", "PREPROCESSING", "TINY_MARKER", "build_random_model", "build_tokenizer",
           "preset_config", "preprocessor_configs", "tiny_config", "write_tiny_model"]

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "video_llava", "llava_onevision", "llava_next_video")

_WORDS = """
a an the and or but if of to in on at by for with from into over under after before during while about
is are was were be been being do does did have has had can could will would should may might must what
which who whom whose where when why how this that these those it its he she they them his her their
there here not no yes all any some many much more most few other another each every both one two three
four five six seven eight nine ten first second third last next left right up down out off again then
man woman person people child boy girl baby dog cat bird horse cow sheep fish animal car bus truck bike
bicycle train plane boat ship road street city house home room kitchen door window table chair bed sofa
desk phone camera screen computer laptop keyboard book paper pen cup glass bottle plate bowl knife fork
spoon food apple banana orange bread cake pizza water coffee tea ball box bag hat shirt shoe shoes jacket
tree flower grass garden park field forest mountain river lake sea beach sky sun moon cloud rain snow
light fire smoke wall floor roof sign clock watch key ring hand hands head face eye eyes hair arm leg
foot feet body mouth nose ear voice music song game sport soccer football basketball tennis player team
video scene frame picture image color red blue green yellow black white brown gray pink purple big small
large little long short tall old new young good bad happy sad fast slow hot cold open close closed
pick picks picked put puts take takes took give gives gave hold holds holding walk walks walking run
runs running sit sits sitting stand stands standing jump jumps eat eats eating drink drinks drinking
play plays playing read reads write writes talk talks say says said look looks looking see sees saw
watch watches show shows happen happens happened move moves moving turn turns rings rang call calls
enter enters leave leaves left come comes came go goes went drive drives riding ride throw throws catch
kick cut cook cooks wash clean opens closes falls fall drop drops start starts stop stops end ends
time times minute minutes second seconds hour hours day night morning evening today moment beginning
middle end thing things something nothing object objects event events number count how many why where
describe happening doing wearing carrying appears appear visible behind front inside outside near far
top bottom side center around between across through toward away together alone
""".split()

_SPECIALS = {
    "qwen": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
             "<|image_pad|>", "<|video_pad|>"],
    "video_llava": ["<unk>", "<s>", "</s>", "<image>", "<video>", "<pad>"],
    "llava_onevision": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"],
}


def _kind(family: str) -> str:
    return "qwen" if family.startswith("qwen") else "video_llava" if family == "llava_next_video" else family


def build_tokenizer(family: str):
    """A WordLevel fast tokenizer with the family's special tokens, ~400 English words and a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = _SPECIALS[_kind(family)]
    unk = "<unk>"
    vocab = {unk: 0}
    for w in specials + _WORDS + list("?.,!:;'\"-<>0123456789") + ["USER", "ASSISTANT", "user", "assistant",
                                                                  "system"]:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    kind = _kind(family)
    if kind == "qwen":
        kw = dict(eos_token="<|im_end|>", pad_token="<|endoftext|>")
    elif kind == "llava_onevision":
        kw = dict(eos_token="<|im_end|>", pad_token="<|endoftext|>")
    else:
        kw = dict(bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=unk, **kw)
    fast.add_special_tokens({"additional_special_tokens": [s for s in specials if s not in kw.values()]})
    fast.chat_template = adapter_class(family).default_template  # the adapter's own fallback template
    return fast


def _text_cfg(vocab: int, *, hidden=64, layers=2, heads=4, kv=2, inter=128, **kw) -> dict:
    return dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=4096, **kw)


def tiny_config(family: str, tok, *, hidden: int = 64, layers: int = 2):
    """The transformers config of the tiny model of `family` (ids taken from `tok`)."""
    from transformers import (LlavaOnevisionConfig, Qwen2_5_VLConfig, Qwen2VLConfig, Qwen3VLConfig,
                              VideoLlavaConfig)

    ids = tok.convert_tokens_to_ids
    vocab = len(tok)
    head_dim = hidden // 4
    mrope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": _mrope_section(head_dim)}
    if family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        tokens = dict(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                      vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
        eos = ids("<|im_end|>")
        if family == "qwen2_vl":
            vision = dict(depth=2, embed_dim=32, hidden_size=hidden, num_heads=4, mlp_ratio=2, patch_size=14,
                          spatial_merge_size=2, temporal_patch_size=2)
            text = _text_cfg(vocab, hidden=hidden, layers=layers, rope_parameters=mrope, eos_token_id=eos,
                             bos_token_id=None)
            return Qwen2VLConfig(text_config=text, vision_config=vision, **tokens)
        if family == "qwen2_5_vl":
            vision = dict(depth=2, hidden_size=32, out_hidden_size=hidden, intermediate_size=64, num_heads=4,
                          patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                          fullatt_block_indexes=[1], tokens_per_second=2)
            text = _text_cfg(vocab, hidden=hidden, layers=layers, rope_parameters=mrope, eos_token_id=eos,
                             bos_token_id=None)
            return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **tokens)
        vision = dict(depth=2, hidden_size=32, out_hidden_size=hidden, intermediate_size=64, num_heads=4,
                      patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                      deepstack_visual_indexes=[0, 1])
        mrope3 = dict(mrope, mrope_interleaved=True)
        text = _text_cfg(vocab, hidden=hidden, layers=max(layers, 3), head_dim=head_dim, rope_parameters=mrope3,
                         eos_token_id=eos)
        return Qwen3VLConfig(text_config=text, vision_config=vision, **tokens)
    if family == "video_llava":
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      image_size=56, patch_size=14, projection_dim=32)
        text = _text_cfg(vocab, hidden=hidden, layers=layers, bos_token_id=ids("<s>"), eos_token_id=ids("</s>"),
                         pad_token_id=ids("<pad>"))
        return VideoLlavaConfig(text_config=dict(text, model_type="llama"),
                                vision_config=dict(vision, model_type="clip_vision_model"),
                                image_token_index=ids("<image>"), video_token_index=ids("<video>"),
                                image_seq_length=16, video_seq_length=8 * 17)
    if family == "llava_next_video":
        from transformers import LlavaNextVideoConfig

        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      image_size=56, patch_size=14, projection_dim=32, model_type="clip_vision_model")
        text = _text_cfg(vocab, hidden=hidden, layers=layers, bos_token_id=ids("<s>"), eos_token_id=ids("</s>"),
                         pad_token_id=ids("<pad>"), model_type="llama")
        return LlavaNextVideoConfig(text_config=text, vision_config=vision, image_token_index=ids("<image>"),
                                    video_token_index=ids("<video>"), image_grid_pinpoints=[[56, 56]],
                                    image_seq_length=16, video_seq_length=8 * 4)
    if family == "llava_onevision":
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      image_size=56, patch_size=14, model_type="siglip_vision_model")
        text = _text_cfg(vocab, hidden=hidden, layers=layers, eos_token_id=ids("<|im_end|>"), model_type="qwen2")
        return LlavaOnevisionConfig(text_config=text, vision_config=vision, image_token_index=ids("<image>"),
                                    video_token_index=ids("<video>"), vision_feature_layer=-1,
                                    vision_feature_select_strategy="full")
    raise ValueError(f"unknown tiny family {family!r}; choose one of {', '.join(FAMILIES)}")


def _mrope_section(head_dim: int) -> list[int]:
    half = head_dim // 2  # sections sum to head_dim / 2 (t, h, w)
    t = half - 2 * (3 * half // 8)
    return [t, 3 * half // 8, 3 * half // 8]


def _model_class(config):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText._model_mapping[type(config)]


LAYOUTS = ("video", "preprocessor", "nested")
PREPROCESSING = ("small", "real")

_PROCESSOR_CLASS = {"qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor", "qwen3_vl": "Qwen3VLProcessor",
                    "video_llava": "VideoLlavaProcessor", "llava_onevision": "LlavaOnevisionProcessor",
                    "llava_next_video": "LlavaNextVideoProcessor"}


def write_tiny_model(family: str, out_dir, *, seed: int = 0, layout: str = "video",
                     preprocessing: str = "small") -> Path:
    """Write a tiny random-weight model of `family` to `out_dir` (config, weights, tokenizer, chat template and
    the preprocessing files a hub checkpoint carries); returns the path.

    Both `streamprune.models.load_model(path)` and the stock `AutoProcessor.from_pretrained(path)` load it.
    `layout` is how the preprocessing settings are stored, as met on the hub:

    - "video": video_preprocessor_config.json (video processor) + preprocessor_config.json (image processor);
    - "preprocessor": only preprocessor_config.json, the image processor's settings, which the stock loader
      also uses for videos (as Qwen/Qwen2-VL-2B-Instruct ships it);
    - "nested": one transformers-5 style processor_config.json {"image_processor": {...},
      "video_processor": {...}, processor kwargs}.

    The LLaVA families' processor kwargs (patch_size, num_image_tokens, ...) go into processor_config.json in
    every layout (flat for "video" / "preprocessor", as llava-hf checkpoints ship them).
    `preprocessing`: "small" (default; small Qwen frames so tests are fast) or "real" (the real checkpoints'
    pixel bounds: Qwen2/2.5-VL min_pixels 3136, max_pixels 12845056; Qwen3-VL video 4096..25165824 pixels
    over the whole clip, images 65536..16777216). Mean/std are the real ones in both; the LLaVA towers are
    56 px in both (the real ones are 224 / 336 / 384, which a tiny tower cannot take)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; choose one of {', '.join(FAMILIES)}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    pp = preprocessor_configs(family, preprocessing)  # validates `preprocessing` before any work
    out = Path(out_dir)
    tok = build_tokenizer(family)
    config = tiny_config(family, tok)
    setattr(config, TINY_MARKER, True)
    with torch.random.fork_rng(devices=[]):  # seeded, and the caller's global RNG state is left as it was
        torch.manual_seed(seed)
        model = _model_class(config)(config).eval()
        with torch.no_grad():  # scale-preserving init so tiny outputs are informative (not all ~0)
            for p in model.parameters():
                if p.ndim >= 2:
                    p.normal_(0.0, p[0].numel() ** -0.5)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("video_preprocessor_config.json", "preprocessor_config.json", "processor_config.json"):
        (out / stale).unlink(missing_ok=True)  # a rewrite in another layout leaves no file of the old one
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "chat_template.jinja").write_text(tok.chat_template)

    def dump(name, obj):
        (out / name).write_text(json.dumps(obj, indent=1))

    if layout == "nested":
        dump("processor_config.json", {"image_processor": pp["image"], "video_processor": pp["video"],
                                       **pp["processor"]})
        return out
    if layout == "video":
        dump("video_preprocessor_config.json", pp["video"])
    dump("preprocessor_config.json", pp["image"])
    if len(pp["processor"]) > 1:  # more than processor_class: the processor's own kwargs
        dump("processor_config.json", pp["processor"])
    return out


def preprocessor_configs(family: str, preprocessing: str = "small") -> dict:
    """{"image": image processor dict, "video": video processor dict, "processor": processor kwargs with
    processor_class} of the tiny model of `family`, written without torchvision (plain JSON, hub style)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; choose one of {', '.join(FAMILIES)}")
    if preprocessing not in PREPROCESSING:
        raise ValueError(f"unknown preprocessing {preprocessing!r}; choose one of {', '.join(PREPROCESSING)}")
    real = preprocessing == "real"
    half = family in ("qwen3_vl", "llava_onevision")
    norm = {"image_mean": list(HALF if half else CLIP_MEAN), "image_std": list(HALF if half else CLIP_STD)}
    pclass = _PROCESSOR_CLASS[family]
    common = {**norm, "processor_class": pclass}
    if family in ("qwen2_vl", "qwen2_5_vl"):
        grid = {"patch_size": 14, "temporal_patch_size": 2, "merge_size": 2}
        lo, hi = (3136, 12845056) if real else (28 * 28 * 4, 28 * 28 * 16)
        image = {"min_pixels": lo, "max_pixels": hi, **grid, **common, "image_processor_type": "Qwen2VLImageProcessor"}
        video = {"size": {"shortest_edge": lo, "longest_edge": hi}, **grid, **common,
                 "video_processor_type": "Qwen2VLVideoProcessor"}
        return {"image": image, "video": video, "processor": {"processor_class": pclass}}
    if family == "qwen3_vl":
        grid = {"patch_size": 16, "temporal_patch_size": 2, "merge_size": 2}
        # small: bounds on t*h*w of the clip, 4-16 merged tokens per frame for a LIVE_CLIP_FRAMES-frame clip
        # (the adapter's policy for a stream of unknown length; lead's note: keep this scaling)
        from .qwen_vl import LIVE_CLIP_FRAMES

        n = LIVE_CLIP_FRAMES
        v = {"shortest_edge": 4096, "longest_edge": 25165824} if real else {"shortest_edge": 32 * 32 * 4 * n,
                                                                                "longest_edge": 32 * 32 * 16 * n}
        i = {"shortest_edge": 65536, "longest_edge": 16777216} if real else dict(v)
        # the hub's name: AutoVideoProcessor infers the video class from it when only this file exists, and
        # "Qwen2VLImageProcessor" would give the Qwen2-VL video processor (per-frame pixel bounds)
        image = {"size": i, **grid, **common, "image_processor_type": "Qwen2VLImageProcessorFast"}
        video = {"size": v, **grid, **common, "video_processor_type": "Qwen3VLVideoProcessor"}
        return {"image": image, "video": video, "processor": {"processor_class": pclass}}
    side = 56  # the tiny towers' image_size
    if family == "llava_onevision":
        size = {"size": {"height": side, "width": side}, "resample": 3}
        image = {**size, "image_grid_pinpoints": [[side, side]], "do_pad": True, **common,
                 "image_processor_type": "LlavaOnevisionImageProcessor"}
        video = {**size, **common, "video_processor_type": "LlavaOnevisionVideoProcessor"}
        proc = {"num_image_tokens": (side // 14) ** 2, "vision_feature_select_strategy": "full",
                "vision_aspect_ratio": "anyres_max_9"}
        return {"image": image, "video": video, "processor": {**proc, "processor_class": pclass}}
    size = {"size": {"shortest_edge": side}, "crop_size": {"height": side, "width": side}, "do_center_crop": True,
            "resample": 3}
    if family == "video_llava":
        image = {**size, **common, "image_processor_type": "VideoLlavaImageProcessor"}
        video = {**size, **common, "video_processor_type": "VideoLlavaVideoProcessor"}
        proc = {"patch_size": 14, "vision_feature_select_strategy": "default", "num_additional_image_tokens": 1}
        return {"image": image, "video": video, "processor": {**proc, "processor_class": pclass}}
    # "LlavaNextImageProcessor" would make AutoVideoProcessor infer "LlavaNextVideoProcessor" (the processor
    # class, which loops back into AutoVideoProcessor) when only this file exists (transformers 5.24)
    image = {**size, "image_grid_pinpoints": [[side, side]], **common,
             "image_processor_type": "LlavaNextImageProcessorFast"}
    video = {**size, **common, "video_processor_type": "LlavaNextVideoVideoProcessor"}
    proc = {"patch_size": 14, "vision_feature_select_strategy": "default"}
    return {"image": image, "video": video, "processor": {**proc, "processor_class": pclass}}


# ---------------------------------------------------------------- real-size random presets (benches)
PRESETS = {
    "qwen2-vl-2b": dict(family="qwen2_vl", hidden=1536, layers=28, heads=12, kv=2, inter=8960, vocab=151936,
                        vision=dict(depth=32, embed_dim=1280, num_heads=16), tie=True),
    "qwen2-vl-7b": dict(family="qwen2_vl", hidden=3584, layers=28, heads=28, kv=4, inter=18944, vocab=152064,
                        vision=dict(depth=32, embed_dim=1280, num_heads=16)),
}


def preset_config(preset: str, *, layers: int | None = None, depth: int | None = None):
    """Config of a real-size model (random weights) with the tiny tokenizer's special-token ids; `layers` /
    `depth` override the LLM's and the vision tower's layer counts (same widths, a cheaper model)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    from transformers import Qwen2VLConfig

    p = dict(PRESETS[preset])
    if layers is not None:
        p["layers"] = layers
    if depth is not None:
        p["vision"] = dict(p["vision"], depth=depth)
    tok = build_tokenizer(p["family"])
    ids = tok.convert_tokens_to_ids
    head_dim = p["hidden"] // p["heads"]
    mrope = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": _mrope_section(head_dim)}
    if head_dim == 128:
        mrope["mrope_section"] = [16, 24, 24]  # the real checkpoints' split
    text = dict(vocab_size=p["vocab"], hidden_size=p["hidden"], intermediate_size=p["inter"],
                num_hidden_layers=p["layers"], num_attention_heads=p["heads"], num_key_value_heads=p["kv"],
                max_position_embeddings=32768, rope_parameters=mrope, eos_token_id=ids("<|im_end|>"),
                bos_token_id=None, rms_norm_eps=1e-6)
    vision = dict(p["vision"], hidden_size=p["hidden"], mlp_ratio=4, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2)
    config = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=ids("<|image_pad|>"),
                           video_token_id=ids("<|video_pad|>"), vision_start_token_id=ids("<|vision_start|>"),
                           vision_end_token_id=ids("<|vision_end|>"), tie_word_embeddings=p.get("tie", False))
    return config, tok


def build_random_model(preset: str, *, device=None, dtype=None, attn_implementation=None, seed: int = 0,
                       layers: int | None = None, depth: int | None = None):
    """A real-size model with random weights (no download) wrapped in its adapter.

    Built on the meta device and materialised on `device` (default cuda if available) in `dtype`
    (default bf16 on GPU, fp32 on CPU); `layers` / `depth` as in preset_config."""
    config, tok = preset_config(preset, layers=layers, depth=depth)
    dev = torch.device(device) if device is not None else default_device()
    dt = parse_dtype(dtype) or default_dtype(dev)
    config._attn_implementation = attn_implementation or "sdpa"
    old = torch.get_default_dtype()
    torch.set_default_dtype(dt)  # parameters born in dt; rotary buffers stay float32 as the model asks
    try:
        with torch.device("meta"):
            model = _model_class(config)(config)
    finally:
        torch.set_default_dtype(old)
    if dev.type == "meta":  # shapes only (parameter counts, memory estimates)
        return adapter_for(model.eval(), tok, name=preset, is_tiny=False)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):  # seeded; global RNG untouched
        torch.manual_seed(seed)
        model = materialize(model, dev)
    model.eval()
    return adapter_for(model, tok, name=preset, is_tiny=False)


def materialize(model, device):
    """Allocate a meta-device model on `device` (dtypes kept) with random weights (std 0.02, norms 1,
    biases 0) and recomputed rotary buffers."""
    model = model.to_empty(device=device)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or ".ln_" in name or name.endswith(("ln_q.weight", "ln_q.bias")):
                p.fill_(1.0) if name.endswith("weight") else p.zero_()
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02)
        for name, b in model.named_buffers():  # rotary inv_freq buffers were not materialised on meta
            _reinit_buffer(model, name, b)
    return model


def _reinit_buffer(model, name: str, buf) -> None:
    mod_name, _, attr = name.rpartition(".")
    mod = model.get_submodule(mod_name)
    if attr == "inv_freq":
        if hasattr(mod, "rope_init_fn") and hasattr(mod, "config") and hasattr(mod.config, "rope_parameters"):
            inv, _ = mod.rope_init_fn(mod.config, buf.device)
        else:  # vision rotary: dim from the buffer length, theta 10000
            dim = 2 * buf.numel()
            inv = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.float, device=buf.device) / dim))
        buf.copy_(inv.to(buf.dtype))
    elif attr == "original_inv_freq":
        buf.copy_(mod.inv_freq)

