"""qa suite over lmms-eval output folders (the layout lmms-eval 0.7.3 writes: <output_path>/<model>/<stamp>_results.json
and <stamp>_samples_<task>.jsonl, plus streamprune's per-sample log <output_path>/streamprune/*.jsonl): rows,
accuracy relative to the full-token run, the report, the plot, the sweep's commands and one-line errors.
The same reading on real lmms-eval runs is in test_lmms_eval.py (CI's lmms leg)."""

import json
import math

import pytest

from streamprune.bench import qa
from streamprune.bench.protocol import SuiteOptions, parse_extra


def _run(folder, model_args: str, score: float, rows: list[dict], task: str = "videomme"):
    """An lmms-eval output folder with one task, `score` as its metric, and streamprune rows."""
    sub = folder / "Qwen__Qwen2-VL-7B-Instruct"
    sub.mkdir(parents=True)
    res = {"results": {task: {"alias": task, "videomme_perception_score,none": score,
                              "videomme_perception_score_stderr,none": "N/A"}},
           "config": {"model": "streamprune", "model_args": model_args}, "n-samples": {task: {"effective": len(rows)}}}
    (sub / "20261202_000000_results.json").write_text(json.dumps(res))
    (sub / f"20261202_000000_samples_{task}.jsonl").write_text(
        "".join(json.dumps({"doc_id": i, "filtered_resps": "A"}) + "\n" for i in range(len(rows))))
    (folder / "streamprune").mkdir()
    (folder / "streamprune" / "20261202_000000_1.jsonl").write_text(
        "".join(json.dumps({"task": task, "doc_id": i, **r}) + "\n" for i, r in enumerate(rows)))
    return folder


def _rows(retention, ttft, peak):
    return [{"retention": retention, "tokens_to_llm": 10 * retention, "tokens_seen": 10, "ttft_s": ttft,
             "prefill_s": ttft / 2, "peak_memory_mb": peak}] * 2


@pytest.fixture
def runs(tmp_path):
    full = _run(tmp_path / "full", "pretrained=Qwen/Qwen2-VL-7B-Instruct,method=full,fps=1", 60.0, _rows(1.0, 2.0, 900))
    sub = _run(tmp_path / "sub", "pretrained=Qwen/Qwen2-VL-7B-Instruct,budget=1024,method=ours,fps=1", 54.0,
               _rows(0.25, 0.5, 500))
    win = _run(tmp_path / "win", "pretrained=Qwen/Qwen2-VL-7B-Instruct,budget=256,method=window,protocol=streaming",
               30.0, _rows(0.1, 0.4, 400))
    return full, sub, win


def test_read_run_rows(runs):
    full, sub, win = runs
    (r,) = qa.read_run(sub)
    assert (r["task"], r["metric"], r["value"], r["n"]) == ("videomme", "videomme_perception_score", 54.0, 2)
    assert (r["method"], r["budget"], r["protocol"], r["model"]) == ("subspace", 1024, "offline",
                                                                     "Qwen/Qwen2-VL-7B-Instruct")  # ours -> subspace
    assert (r["retention"], r["ttft_s"], r["peak_mb"], r["questions"]) == (0.25, 0.5, 500.0, 2)
    assert qa.read_run(full)[0]["budget"] == "full" and qa.read_run(win)[0]["protocol"] == "streaming"


def test_relative_to_the_matching_full_run(runs):
    rows = qa.add_relative([r for f in runs for r in qa.read_run(f)])
    by = {r["method"]: r for r in rows}
    assert by["full"]["relative"] == 1.0 and by["subspace"]["relative"] == pytest.approx(0.9)
    assert math.isnan(by["window"]["relative"]) and by["window"]["relative_note"] == "no full-token run"  # streaming
    zero = qa.add_relative([{**by["full"], "value": 0.0}, dict(by["subspace"])])
    assert zero[1]["relative_note"] == "full-token score is 0"


def test_report_and_plot(runs, tmp_path):
    rows = qa.finalize([r for f in runs for r in qa.read_run(f)], SuiteOptions())
    md = qa.report(rows, SuiteOptions())
    assert md.startswith("## qa:") and "| videomme |" in md and "0.900" in md and "no full-token run" in md
    assert md.index("| full |") < md.index("| subspace |")  # full first: the denominator
    pytest.importorskip("matplotlib")
    (png,) = qa.plots(rows, SuiteOptions(), tmp_path / "plots")
    assert png.is_file() and png.stat().st_size > 1000


def test_sweep_plan_and_commands(tmp_path):
    extra = parse_extra("qa", qa.OPTIONS, {"tasks": "videomme,mvbench", "methods": "subspace,window",
                                           "budgets": "64,256", "limit": "5", "model_args": "memory=4096"})
    opts = SuiteOptions(out=tmp_path, device="cuda", dtype="bfloat16", model="Qwen/Qwen2-VL-7B-Instruct", extra=extra)
    import importlib.util

    if importlib.util.find_spec("lmms_eval") is None:
        with pytest.raises(ValueError, match="not installed"):
            qa.plan(opts)
    else:
        units = qa.plan(opts)
        assert [u.params["method"] for u in units] == ["full"] + ["subspace"] * 2 + ["window"] * 2
        assert len({u.id for u in units}) == 5
    cmd = qa.lmms_command(opts, "Qwen/Qwen2-VL-7B-Instruct", "subspace", 64, tmp_path / "o")
    assert cmd[1:3] == ["-m", "lmms_eval"] and cmd[cmd.index("--tasks") + 1] == "videomme,mvbench"
    margs = qa.parse_model_args(cmd[cmd.index("--model_args") + 1])
    assert margs == {"pretrained": "Qwen/Qwen2-VL-7B-Instruct", "method": "subspace", "fps": "1", "protocol": "offline",
                     "budget": "64", "device": "cuda", "dtype": "bfloat16", "memory": "4096"}
    assert "budget" not in qa.parse_model_args(qa.lmms_command(opts, "m", "full", None, tmp_path)[5])
    assert cmd[cmd.index("--limit") + 1] == "5" and "--log_samples" in cmd


def test_bad_input_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="pass --opt tasks=") as e:
        qa.plan(SuiteOptions(out=tmp_path, extra=parse_extra("qa", qa.OPTIONS, {})))
    with pytest.raises(ValueError, match="no lmms-eval results") as e:
        qa.read_run(tmp_path)
    bad = tmp_path / "bad" / "m"
    bad.mkdir(parents=True)
    (bad / "20261202_000000_results.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read") as e:
        qa.read_run(tmp_path / "bad")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="option budgets"):
        parse_extra("qa", qa.OPTIONS, {"budgets": "a,b"})
