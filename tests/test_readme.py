"""The README's Python examples run as written.

Every ```python block of README.md is executed, each in a fresh namespace, in a folder holding a short
`video.mp4`. The one substitution (documented in the README beside the examples): the checkpoint name
`Qwen/Qwen2-VL-2B-Instruct` becomes the folder of a tiny random-weight Qwen2-VL model
(`streamprune.models.write_tiny_model`), so nothing is downloaded. Nothing else in the text is changed.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = "Qwen/Qwen2-VL-2B-Instruct"  # the marker: the checkpoint name the examples use


def _blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.S | re.M)


def test_the_readme_has_the_examples_the_api_promises():
    text = "\n".join(_blocks())
    assert len(_blocks()) >= 4
    for call in ("streamprune.ask(", "streamprune.wrap(", ".push_frames(", "np.", "streamprune.Pipeline(",
                 "DecoderPruneConfig("):
        assert call in text, call
    assert CHECKPOINT in text


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    from streamprune.bench.clips import write_box_clip
    from streamprune.models import write_tiny_model

    root = tmp_path_factory.mktemp("readme")
    model = write_tiny_model("qwen2_vl", root / "tiny-qwen2-vl")
    write_box_clip(root / "video.mp4", n_frames=8, rate=2)
    return root, model


@pytest.mark.parametrize("i", range(len(_blocks())))
def test_readme_example_runs(place, monkeypatch, i):
    root, model = place
    code = _blocks()[i]
    if "AutoProcessor" in code:  # transformers' stock video processors need torchvision (CI's lowest leg has none)
        pytest.importorskip("torchvision", reason="the stock processor this example loads needs torchvision; "
                                                  "it runs in CI's newest leg")
    monkeypatch.chdir(root)
    source = code.replace(CHECKPOINT, str(model))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # wrap() must not fall back on a stock processor
        exec(compile(source, f"README.md python block {i + 1}", "exec"), {"__name__": "__readme__"})
    if "print(" in code:
        assert out.getvalue().strip(), "the example printed nothing"
