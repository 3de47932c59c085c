"""streamprune.models: transformers adapters behind a registry (by config.model_type) and tiny models.

    adapter = load_model("Qwen/Qwen2-VL-2B-Instruct")       # or a local folder, e.g. from write_tiny_model
    adapter = wrap_model(model, processor)                  # an already-loaded model and its processor
    block = adapter.encode(frames, times)                   # (T, H, W, 3) uint8, T == adapter.frames_per_block
    text = adapter.generate(memory, "What happens?")        # memory: .tokens, .times, .payload (arrival order)

base.py: the adapter contract; loading.py: hub / folder loading and option checks; registry.py: the family
registry and wrap_model; qwen_vl.py, llava.py: one module per family; tiny.py: random-weight test models.
"""

from .base import TINY_MARKER, Adapter, EncodedBlock, ModelLoadError
from .loading import (check_attn, default_device, default_dtype, load_model, parse_device, parse_dtype,
                      video_preproc_config)
from .registry import REGISTRY, adapter_class, adapter_for, wrap_model
from .tiny import FAMILIES, PRESETS, build_random_model, write_tiny_model

__all__ = ["Adapter", "EncodedBlock", "FAMILIES", "ModelLoadError", "PRESETS", "REGISTRY", "TINY_MARKER",
           "adapter_class", "adapter_for", "build_random_model", "check_attn", "default_device", "default_dtype",
           "load_model", "parse_device", "parse_dtype", "video_preproc_config", "wrap_model", "write_tiny_model"]
