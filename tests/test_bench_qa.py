"""qa suite: every published layout loads; questions asked mid-stream see only the past; the full-token arm
and accuracy relative to it; end to end on a tiny model + tiny dataset; one-line errors."""

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
        assert len(items) == 2, d  # mlvu: open-ended 9_summary skipped; egoschema: unanswered question skipped
        assert all(it.video.is_file() and 0 <= it.answer < len(it.options) for it in items), d
        assert items[0].time == (1.0 if d == "mvbench" else None) and items[1].time == 0.5, d  # mvbench: its end
    vm = qa.load_dataset("videomme", data)
    assert vm[1].options[1] == "a scene cut" and vm[1].answer == 1  # "B. " prefix stripped, letter -> index
    assert vm[0].duration == "short" and vm[0].video == data / "videomme" / "data" / "clip0.mp4"
    mv = qa.load_dataset("mvbench", data)
    assert mv[0].video.parent == data / "mvbench" / "video" / "star" / "Charades_v1_480"  # per-task folder
    assert mv[0].window == (0.0, 1.0) and mv[1].window == (0.0, 0.5) and mv[1].time == 0.5  # start/end bound
    assert qa.load_dataset("mlvu", data)[0].video.parent.name == "1_plotQA"
    eg = qa.load_dataset("egoschema", data)
    assert len(eg[0].options) == 5 and eg[1].answer == 1
    assert qa.load_dataset("longvideobench", data)[0].duration == "15"


def test_videomme_parquet(tmp_path):
    base = tmp_path / "videomme" / "videomme"
    base.mkdir(parents=True)
    rec = {"videoID": "v", "question_id": "001-1", "duration": "long", "question": "q?",
           "options": ["A. x", "B. y", "C. z", "D. w"], "answer": "C"}
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        (base / "test-00000-of-00001.parquet").write_bytes(b"PAR1")
        with pytest.raises(ValueError, match=r"needs pyarrow") as e:
            qa.load_dataset("videomme", tmp_path)
        assert "\n" not in str(e.value)
        return
    pq.write_table(pa.Table.from_pylist([rec]), base / "test-00000-of-00001.parquet")
    it = qa.load_dataset("videomme", tmp_path)[0]
    assert (it.answer, it.options[2], it.duration) == (2, "z", "long")


def test_bad_layouts_are_one_line(tmp_path):
    (tmp_path / "longvideobench").mkdir()
    with pytest.raises(ValueError, match="annotation file .*lvb_val.json not found"):
        qa.load_dataset("longvideobench", tmp_path)
    (tmp_path / "mvbench" / "json").mkdir(parents=True)
    (tmp_path / "mvbench" / "json" / "action_count.json").write_text(json.dumps(
        [{"video": "a.webm", "question": "q", "candidates": ["1", "2"], "answer": "3"}]))
    with pytest.raises(ValueError, match="answer '3' not among the candidates"):
        qa.load_dataset("mvbench", tmp_path)
    with pytest.raises(ValueError, match="dataset folder .* not found"):
        qa.load_dataset("mlvu", tmp_path)


def test_streaming_asks_at_question_time(data):
    from streamprune.pipeline import AskConfig, Pipeline

    ad = qa._adapter(str(data / "model"), None, None, None)
    items = qa.load_dataset("longvideobench", data)
    pipe = Pipeline(ad, AskConfig(budget=8, method="ours", fps=8.0, max_new_tokens=2))
    seen = []

    def ask(p, it, flush):
        seen.append((it.qid, p.frames_seen, flush))
        return p.ask(qa.prompt(it), flush=flush)

    with qa._frames(items[0].video, 8.0, None) as rd:
        got = qa.stream_questions(pipe, rd, items, ask)
    assert [g[0].qid for g in got] == [it.qid for it in items]  # results in item order
    assert [s[0] for s in seen] == [items[1].qid, items[0].qid]  # asked in stream order: mid-clip first
    (_, a_end, t_end, late_end), (_, a_mid, t_mid, late_mid) = got
    assert t_mid == 0.5 and t_end is None and seen[0][2] is False
    assert late_mid <= 0.5 and a_mid.span[1] <= 0.5 and a_mid.kept_span[1] <= 0.5  # nothing from the future
    assert seen[0][1] < seen[1][1] == 8 and late_end > 0.5 and a_end.span[1] > 0.5  # the end question sees it all


def test_full_arm_skipped_when_it_does_not_fit(data):
    p = {"model": str(data / "model"), "device": None, "dtype": None, "attn": None, "data": str(data),
         "dataset": "egoschema", "limit": 2, "fps": 8.0, "max_frames": 4, "max_new_tokens": 2, "streaming": False,
         "method": "full", "budget": "full", "full_max_tokens": 40}
    full = qa.run_unit_params(p)[0]
    assert math.isnan(full["accuracy"]) and "does not fit" in full["skipped"] and "context of 40" in full["skipped"]
    part = qa.run_unit_params({**p, "method": "random", "budget": 4})[0]
    assert part["n"] == 2 and 0 <= part["accuracy"] <= 1 and part["tokens_to_llm"] <= 4
    rel = qa.add_relative([full, part])[1]
    assert math.isnan(rel["relative"]) and "does not fit" in rel["relative_note"]


def test_parse_choice_and_relative():
    assert qa.parse_choice("B. a scene cut", 4) == 1
    assert qa.parse_choice("(C)", 4) == 2
    assert qa.parse_choice("The answer is D", 4) == 3
    assert qa.parse_choice("E", 4) is None and qa.parse_choice("no idea", 4) is None
    rows = [{"dataset": "x", "streaming": False, "budget": "full", "accuracy": 0.5},
            {"dataset": "x", "streaming": False, "budget": 16, "accuracy": 0.25},
            {"dataset": "y", "streaming": False, "budget": 16, "accuracy": 0.25},
            {"dataset": "x", "streaming": True, "budget": 16, "accuracy": 0.25}]
    rel = [r["relative"] for r in qa.add_relative(rows)]
    assert rel[:2] == [1.0, 0.5] and math.isnan(rel[2]) and math.isnan(rel[3])
    assert rows[2]["relative_note"] == "no full-token run"


def test_cli_qa_end_to_end(data, tmp_path, capsys):
    from streamprune.cli import main

    out = tmp_path / "out"
    args = ["bench", "--suite", "qa", "--data", str(data), "--model", str(data / "model"), "--datasets",
            "longvideobench", "--methods", "ours", "--budgets", "8", "--max-frames", "4", "--fps", "8",
            "--out", str(out)]
    assert main(args) == 0
    rows = [json.loads(ln) for ln in (out / "qa.jsonl").read_text().splitlines()]
    assert [(r["method"], r["streaming"]) for r in rows] == [("full", False), ("ours", False), ("full", True),
                                                             ("ours", True)]
    for r in rows:
        assert r["n"] == 2 and 0 <= r["accuracy"] <= 1 and r["ttft_s"] > 0 and "relative" in r
        assert r["accuracy"] == sum(q["correct"] for q in r["questions"]) / 2
        assert r["accuracy_by_duration"] == {"15": r["accuracy"]}
    assert rows[0]["relative"] == 1.0 or rows[0]["accuracy"] == 0
    assert rows[1]["tokens_to_llm"] <= 8 < rows[0]["tokens_to_llm"]
    qs = {q["qid"]: q for q in rows[3]["questions"]}
    mid, end = qs["clip0_1"], qs["clip0_0"]
    assert mid["asked_at"] == 0.5 and mid["span"][1] <= 0.5 < end["span"][1] and end["asked_at"] is None
    assert rows[2]["questions"][1]["tokens_to_llm"] < rows[2]["questions"][0]["tokens_to_llm"]  # full arm, mid-clip
    assert "longvideobench" in capsys.readouterr().out
    assert main(args) == 0 and len((out / "qa.jsonl").read_text().splitlines()) == 4  # resumed: nothing re-run


def test_missing_dataset_or_model_is_one_line(data, tmp_path, capsys):
    from streamprune.cli import main

    assert main(["bench", "--suite", "qa", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no dataset folder" in capsys.readouterr().err
    assert main(["bench", "--suite", "qa", "--data", str(data), "--datasets", "mlvu", "--model",
                 str(tmp_path / "nomodel"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0]
