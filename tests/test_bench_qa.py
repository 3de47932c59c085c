"""qa suite: every published layout loads; end to end on a tiny model + tiny dataset; one-line errors."""

import json
import math

import pytest

from streamprune.bench import qa


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("qa")
    for d in qa.DATASETS:
        qa.write_tiny_dataset(root, d, n_videos=1, seconds=1.0)
    from streamprune.models import write_tiny_model

    write_tiny_model("qwen2_vl", root / "model")
    return root


def test_all_layouts_load(data):
    for d in qa.DATASETS:
        items = qa.load_dataset(d, data)
        assert len(items) == 2, d
        assert all(it.video.is_file() and 0 <= it.answer < len(it.options) for it in items), d
    mv = qa.load_dataset("videomme", data)
    assert mv[1].options[1] == "a scene cut" and mv[1].answer == 1  # "B. " prefix stripped, letter -> index


def test_parse_choice_and_relative():
    assert qa.parse_choice("B. a scene cut", 4) == 1
    assert qa.parse_choice("(C)", 4) == 2
    assert qa.parse_choice("The answer is D", 4) == 3
    assert qa.parse_choice("E", 4) is None and qa.parse_choice("no idea", 4) is None
    rows = [{"dataset": "x", "streaming": False, "budget": "full", "accuracy": 0.5},
            {"dataset": "x", "streaming": False, "budget": 16, "accuracy": 0.25},
            {"dataset": "y", "streaming": False, "budget": 16, "accuracy": 0.25}]
    rel = [r["relative"] for r in qa.add_relative(rows)]
    assert rel[:2] == [1.0, 0.5] and math.isnan(rel[2])


def test_cli_qa_end_to_end(data, tmp_path, capsys):
    from streamprune.cli import main

    out = tmp_path / "out"
    args = ["bench", "--suite", "qa", "--data", str(data), "--model", str(data / "model"), "--datasets",
            "longvideobench", "--methods", "ours", "--budgets", "8", "--max-frames", "4", "--out", str(out)]
    assert main(args) == 0
    rows = [json.loads(ln) for ln in (out / "qa.jsonl").read_text().splitlines()]
    assert [(r["method"], r["streaming"]) for r in rows] == [("full", False), ("ours", False), ("full", True),
                                                             ("ours", True)]
    for r in rows:
        assert r["n"] == 2 and 0 <= r["accuracy"] <= 1 and r["ttft_s"] > 0 and "relative" in r
    assert rows[1]["tokens_to_llm"] <= 8 < rows[0]["tokens_to_llm"]
    assert "longvideobench" in capsys.readouterr().out


def test_missing_dataset_or_model_is_one_line(data, tmp_path, capsys):
    from streamprune.cli import main

    assert main(["bench", "--suite", "qa", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no dataset folder" in capsys.readouterr().err
    assert main(["bench", "--suite", "qa", "--data", str(data), "--datasets", "mlvu", "--model",
                 str(tmp_path / "nomodel"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0]
