"""streamprune.models: transformers adapters behind a registry (by config.model_type) and tiny models.

    adapter = load_model("Qwen/Qwen2-VL-2B-Instruct")       # or a local folder, e.g. from write_tiny_model
    block = adapter.encode(frames, times)                   # (T, H, W, 3) uint8, T == adapter.frames_per_block
    text = adapter.generate(memory, "What happens?")        # memory: .tokens, .times, .payload (arrival order)
"""

from .base import REGISTRY, Adapter, EncodedBlock, ModelLoadError, adapter_for, load_model
from .tiny import FAMILIES, PRESETS, build_random_model, write_tiny_model

__all__ = ["Adapter", "EncodedBlock", "FAMILIES", "ModelLoadError", "PRESETS", "REGISTRY", "adapter_for",
           "build_random_model", "load_model", "write_tiny_model"]
