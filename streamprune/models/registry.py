"""The family registry (config.model_type -> adapter class) and wrapping an already-loaded transformers model.

    from transformers import AutoModelForImageTextToText, AutoProcessor
    model = AutoModelForImageTextToText.from_pretrained(path)
    adapter = wrap_model(model, AutoProcessor.from_pretrained(path))   # the processor's own settings

`wrap_model` takes the processor's tokenizer, its chat template and its video processor's settings (pixel
bounds, mean/std, patch / merge / temporal patch sizes), so frames are prepared as that processor prepares
them; where it must fall back to the family's defaults it says so with one warning line.
"""

from __future__ import annotations

import importlib
import logging
import warnings

from .base import TINY_MARKER, Adapter, ModelLoadError

log = logging.getLogger(__name__)

# model_type -> (module, class name)
REGISTRY = {
    "qwen2_vl": ("qwen_vl", "QwenVLAdapter"),
    "qwen2_5_vl": ("qwen_vl", "QwenVLAdapter"),
    "qwen3_vl": ("qwen_vl", "QwenVLAdapter"),
    "video_llava": ("llava", "VideoLlavaAdapter"),
    "llava_onevision": ("llava", "OneVisionAdapter"),
    "llava_next_video": ("llava", "NextVideoAdapter"),
}

# video-processor key -> vision-config attribute that must agree with it (the tower's geometry)
_GEOMETRY = {"patch_size": "patch_size", "temporal_patch_size": "temporal_patch_size", "merge_size": "spatial_merge_size"}


def adapter_class(model_type: str) -> type[Adapter]:
    """The adapter class of a family; ModelLoadError for an architecture the registry does not know."""
    if model_type not in REGISTRY:
        raise ModelLoadError(f"unsupported architecture {model_type!r}; supported: {', '.join(REGISTRY)}")
    mod, cls = REGISTRY[model_type]
    return getattr(importlib.import_module(f"streamprune.models.{mod}"), cls)


def adapter_for(model, tokenizer, *, name: str = "", is_tiny: bool = False, **kw) -> Adapter:
    """Wrap an already-built transformers model in the adapter of its family, with `tokenizer` and the
    family's default video settings (or `preprocessing=` / `template=` given here). A processor in place of
    the tokenizer is taken as by `wrap_model` (its tokenizer, template and video settings)."""
    if _is_processor(tokenizer):
        return wrap_model(model, tokenizer, name=name, **kw)
    return adapter_class(model.config.model_type)(model, tokenizer, name=name, is_tiny=is_tiny, **kw)


def video_template(candidates) -> str | None:
    """The first chat template among `candidates` (strings, or {name: template} dicts: their "default") that
    renders a video item; None when none does."""
    for t in candidates:
        if isinstance(t, dict):
            t = t.get("default")
        if isinstance(t, str) and "video" in t:
            return t
    return None


def _is_processor(obj) -> bool:
    return any(getattr(obj, a, None) is not None for a in ("video_processor", "image_processor")) or (
        hasattr(obj, "tokenizer") and not hasattr(obj, "convert_tokens_to_ids"))


def _fallback(msg: str) -> None:
    warnings.warn(msg, UserWarning, stacklevel=3)


def processor_settings(processor) -> tuple[object, str | None, dict, list[str]]:
    """(tokenizer, chat template rendering a video or None, video-processor settings dict, fallback notes)
    of a transformers processor (a bare tokenizer gives no settings: every one is a fallback)."""
    notes: list[str] = []
    if processor is None:
        raise ValueError("wrap needs the model's processor (or at least its tokenizer), got None")
    tokenizer = getattr(processor, "tokenizer", None) if _is_processor(processor) else processor
    if tokenizer is None or not hasattr(tokenizer, "convert_tokens_to_ids"):
        raise ValueError(f"{type(processor).__name__} has no tokenizer; pass the model's processor or tokenizer")
    vp = getattr(processor, "video_processor", None)
    settings: dict = {}
    if vp is not None:
        settings = dict(vp.to_dict())
    else:
        ip = getattr(processor, "image_processor", None)
        if ip is not None:  # what the stock loader does with a checkpoint that has no video settings
            settings = dict(ip.to_dict())
            notes.append("no video processor: using the image processor's settings for video")
        else:
            notes.append("no video processor settings: using the family's default pixel bounds and mean/std")
    template = video_template([getattr(processor, "chat_template", None), getattr(tokenizer, "chat_template", None)])
    if template is None:
        notes.append("no chat template renders a video: using the family's default template")
    return tokenizer, template, settings, notes


def check_geometry(model, settings: dict) -> list[str]:
    """ValueError when the processor's patch / merge / temporal patch sizes disagree with the model's vision
    tower (frames prepared with them would not fit the tower); notes for a crop / fixed size that differs from
    the tower's input side (the adapter resizes to the tower's side, as the model needs)."""
    vc = getattr(model.config, "vision_config", None)
    for key, attr in _GEOMETRY.items():
        want, got = getattr(vc, attr, None), settings.get(key)
        if want is not None and got is not None and int(got) != int(want):
            raise ValueError(f"processor {key} {got} does not match the model's vision {attr} {want}")
    side = getattr(vc, "image_size", None)
    crop = settings.get("crop_size") or (settings.get("size") if "height" in (settings.get("size") or {}) else None)
    if isinstance(side, int) and isinstance(crop, dict) and (crop.get("height"), crop.get("width")) != (side, side):
        return [f"processor frames are {crop.get('height')}x{crop.get('width')} but the vision tower takes "
                f"{side}x{side}: using the tower's size"]
    return []


def wrap_model(model, processor, *, name: str = "", **kw) -> Adapter:
    """The family adapter of an already-loaded transformers model, prepared as `processor` prepares videos.

    Taken from the processor: its tokenizer, its chat template (when it renders a video item), its video
    processor's settings (`to_dict()`: pixel bounds, mean/std, patch / merge / temporal patch sizes; the image
    processor's when it has no video processor, as the stock loader does). A fallback to the family's defaults
    warns (UserWarning, one line). `kw` goes to the adapter (e.g. positions=)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    cls = adapter_class(model_type)
    tokenizer, template, settings, notes = processor_settings(processor)
    notes += check_geometry(model, settings)
    label = name or str(getattr(model, "name_or_path", "") or model_type)
    for note in notes:
        _fallback(f"{label}: {note}")
    is_tiny = bool(getattr(model.config, TINY_MARKER, False))
    kw.setdefault("template", template)
    kw.setdefault("preprocessing", settings)
    return cls(model, tokenizer, name=label, is_tiny=is_tiny, **kw)
