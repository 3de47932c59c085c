"""Plugins for other tools, found through their entry points (pyproject.toml).

lmms_eval_manifest: the `lmms_eval.models` entry point, `--model streamprune` (integrations/lmms_eval.py).
Loading an entry point imports only this module: lmms-eval, torch and transformers load when the model is built.
"""

from __future__ import annotations

LMMS_EVAL_CLASS = "streamprune.integrations.lmms_eval.StreamPrune"


def lmms_eval_manifest():
    """lmms-eval's ModelManifest for `--model streamprune` (a "simple" model: it takes the task's text prompt
    and video, and renders the model's own chat template)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="streamprune", simple_class_path=LMMS_EVAL_CLASS)
