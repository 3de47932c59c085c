"""The public API (`import streamprune`), its import cost, and the CLI's help."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import streamprune
from streamprune.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_every_public_name_resolves_to_its_module():
    from streamprune.models import load_model
    from streamprune.models.decoder_prune import DecoderPruneConfig
    from streamprune.pipeline import Answer, AskConfig, Pipeline, ask, wrap
    from streamprune.select import METHODS, make_selector

    expected = {"ask": ask, "Pipeline": Pipeline, "AskConfig": AskConfig, "Answer": Answer, "load_model": load_model,
                "make_selector": make_selector, "METHODS": METHODS, "DecoderPruneConfig": DecoderPruneConfig,
                "wrap": wrap}
    assert set(streamprune.__all__) == set(expected) | {"__version__"}
    for name, obj in expected.items():
        assert getattr(streamprune, name) is obj, name
    assert set(streamprune.__all__) <= set(dir(streamprune))
    with pytest.raises(AttributeError):
        getattr(streamprune, "no_such_name")


def test_version_matches_pyproject():
    import tomllib

    assert streamprune.__version__ == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_py_typed_ships():
    import tomllib

    assert (ROOT / "streamprune" / "py.typed").is_file()
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in data["streamprune"]


def test_import_streamprune_is_cheap():
    """`import streamprune` loads neither transformers nor torch; the first use of a name imports its module."""
    code = ("import sys, streamprune; print('transformers' in sys.modules, 'torch' in sys.modules); "
            "streamprune.AskConfig; print('streamprune.config' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["False", "False"], out
    assert out[2] == "True"  # the lazy name really imported its module


def test_readme_python_example_imports_work():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "README has no Python example"
    imports = [ln for b in blocks for ln in b.splitlines() if re.match(r"(from \S+ )?import ", ln)]
    assert imports, "README's Python example imports nothing"
    code = "\n".join(imports)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ---------------------------------------------------------------- CLI help
def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # unwrapped: argparse wraps at the terminal width


def test_ask_help_shows_defaults_and_every_method(capsys):
    from streamprune.select import METHODS

    text = _help(["ask", "--help"], capsys)
    assert "(default" in text
    assert "(default: 1024)" in text  # --budget
    assert "window" in text
    for m in METHODS:
        assert re.search(rf"\b{re.escape(m)}\b", text), m


def test_tiny_model_help_lists_every_family(capsys):
    from streamprune.models.tiny import FAMILIES

    text = _help(["tiny-model", "--help"], capsys)
    assert len(FAMILIES) == 6
    for f in FAMILIES:
        assert f in text, f


def test_parsing_does_not_import_torch():
    """Only showing help fills the method / family lists from the library; parsing a command line stays cheap."""
    code = ("import sys; from streamprune.cli import build_parser; "
            "build_parser().parse_args(['ask', 'v.mp4', 'q?', '--method', 'window']); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


# ---------------------------------------------------------------- the method's name
def test_subspace_is_the_default_and_ours_an_alias_that_warns_once(monkeypatch):
    import warnings

    import streamprune.select as sel
    from streamprune.cli import build_parser
    from streamprune.select import METHOD_ALIASES, METHODS, StreamingSelector, make_selector

    assert METHODS[0] == "subspace" and "ours" not in METHODS and METHOD_ALIASES == {"ours": "subspace"}
    assert streamprune.AskConfig().method == "subspace"
    assert build_parser().parse_args(["ask", "v.mp4", "q?"]).method == "subspace"
    monkeypatch.setattr(sel, "_warned", set())  # a fresh process: the warning not yet given
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        cfg = streamprune.AskConfig(method="ours")
        s = make_selector("ours", 8)
        streamprune.AskConfig(method="ours")
    assert cfg.method == "subspace" and isinstance(s, StreamingSelector)
    dep = [r for r in rec if issubclass(r.category, DeprecationWarning)]
    assert len(dep) == 1 and "'subspace'" in str(dep[0].message) and dep[0].filename == __file__
    with pytest.raises(ValueError, match="subspace"):
        make_selector("no-such-method", 8)


def test_ask_accepts_the_old_method_name_on_the_command_line(capsys, tmp_path):
    """`--method ours` still runs (as subspace): the JSON names the new method."""
    import json

    from streamprune.bench.clips import write_box_clip
    from streamprune.models import write_tiny_model

    model = write_tiny_model("qwen2_vl", tmp_path / "m")
    video = write_box_clip(tmp_path / "v.mp4", n_frames=4, rate=2)
    code = main(["ask", str(video), "What is white?", "--model", str(model), "--budget", "4", "--method", "ours",
                 "--max-new-tokens", "1", "--json"])
    out, err = capsys.readouterr()
    assert code == 0 and json.loads(out)["method"] == "subspace"
    assert "warning: --method ours is now called subspace" in " ".join(err.split())
