"""streamprune: fixed visual-token budgets for video LLMs on long and live video.

    import streamprune

    answer = streamprune.ask("video.mp4", "What happens?", model="Qwen/Qwen2-VL-2B-Instruct", budget=1024)
    pipe = streamprune.Pipeline(streamprune.load_model("Qwen/Qwen2-VL-2B-Instruct"),
                                streamprune.AskConfig(budget=1024))
    handle = streamprune.wrap(model, processor, budget=1024)   # a model you already loaded, with its processor
    answer = handle.ask("video.mp4", "What happens?")

The names below are imported on first use (`import streamprune` loads neither torch nor transformers).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "ask": "streamprune.pipeline",
    "wrap": "streamprune.pipeline",
    "Pipeline": "streamprune.pipeline",
    "AskConfig": "streamprune.config",
    "Answer": "streamprune.config",
    "load_model": "streamprune.models",
    "make_selector": "streamprune.select",
    "METHODS": "streamprune.select",
    "DecoderPruneConfig": "streamprune.models.decoder_prune",
}

__all__ = ["Answer", "AskConfig", "DecoderPruneConfig", "METHODS", "Pipeline", "__version__", "ask", "load_model",
           "make_selector", "wrap"]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names come from __getattr__
    from .models import load_model
    from .models.decoder_prune import DecoderPruneConfig
    from .config import Answer, AskConfig
    from .pipeline import Pipeline, ask, wrap
    from .select import METHODS, make_selector


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'streamprune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
