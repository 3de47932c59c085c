"""`lmms-eval --model streamprune` through lmms-eval's own CLI (a subprocess, as users run it), on local tasks
(tests/lmms_tasks: the stock videomme / ovobench task functions over generated clips) with a tiny random-weight
Qwen2-VL: results and logged samples are written, pruned / full / streaming / window runs complete, and the
per-sample log is sane. lmms-eval exits 0 even when a run fails, so every check reads its output files.

These run in CI's lmms leg (`bash .ci/run lmms`), where lmms-eval is installed; the other legs skip them.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval", reason="lmms-eval is not installed: these tests run in CI's lmms leg "
                                        "(bash .ci/run lmms, pip install -e '.[dev,lmms-eval]')")

TASKS = Path(__file__).resolve().parent / "lmms_tasks"
BUDGET = 24
OVO = "sp_ovo_backward,sp_ovo_realtime,sp_ovo_forward"


def _build_data():
    spec = importlib.util.spec_from_file_location("sp_lmms_build_data", TASKS / "build_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from streamprune.models import write_tiny_model

    root = tmp_path_factory.mktemp("lmms")
    docs = _build_data().write(root)
    write_tiny_model("qwen2_vl", root / "model")
    return root, docs


def _env(root: Path) -> dict:
    return {**os.environ, "HF_HOME": str(root / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


class Run:
    """One `python -m lmms_eval` run and what it wrote under its --output_path."""

    def __init__(self, root: Path, name: str, model_args: str, tasks: str):
        self.out = root / "out" / name
        cmd = [sys.executable, "-m", "lmms_eval", "--model", "streamprune",
               "--model_args", f"pretrained={root / 'model'},device=cpu,fps=2,{model_args}", "--tasks", tasks,
               "--include_path", str(TASKS), "--output_path", str(self.out), "--log_samples"]
        # data_files (and OVO's data_dir) resolve relative to the working directory: run it in root
        p = subprocess.run(cmd, cwd=root, env=_env(root), capture_output=True, text=True, timeout=1500)
        self.log = (p.stdout + p.stderr)[-6000:]
        self.rc = p.returncode
        from streamprune.bench.qa import results_files

        results = results_files(self.out)
        assert p.returncode == 0 and len(results) == 1, f"lmms-eval wrote no results (rc {p.returncode}):\n{self.log}"
        self.results = json.loads(results[0].read_text())
        self.samples = {}
        for f in results[0].parent.glob("*_samples_*.jsonl"):
            task = f.stem.split("_samples_", 1)[1]
            self.samples[task] = [json.loads(ln) for ln in f.read_text().splitlines() if ln.strip()]
        logs = sorted((self.out / "streamprune").glob("*.jsonl"))
        assert len(logs) == 1, f"no per-sample streamprune log under {self.out}:\n{self.log}"
        self.rows = [json.loads(ln) for ln in logs[0].read_text().splitlines() if ln.strip()]

    def rows_of(self, task: str) -> list[dict]:
        return [r for r in self.rows if r["task"] == task]


@pytest.fixture(scope="module")
def offline(root):
    return Run(root[0], "offline", f"budget={BUDGET},method=subspace", "sp_videomme," + OVO)


@pytest.fixture(scope="module")
def full(root):
    return Run(root[0], "full", "method=full", "sp_videomme")


@pytest.fixture(scope="module")
def streaming(root):
    return Run(root[0], "streaming", f"budget={BUDGET},memory={BUDGET},method=subspace,protocol=streaming", OVO)


@pytest.fixture(scope="module")
def window(root):
    return Run(root[0], "window", f"budget={BUDGET},memory={BUDGET},method=window,protocol=streaming", OVO)


def _check_row(r: dict, budget: int | None) -> None:
    """Per-sample fields present and sane."""
    seen, to_llm = r["tokens_seen"], r["tokens_to_llm"]
    assert 0 < to_llm <= seen and to_llm <= r["budget"] and r["tokens_kept"] <= r["memory"], r
    if budget is not None:
        assert r["budget"] == budget, r
    assert math.isclose(r["retention"], to_llm / seen) and 0 < r["retention"] <= 1, r
    for k in ("ttft_s", "prefill_s", "generate_s", "encode_s", "peak_memory_mb"):
        assert r[k] > 0, (k, r)
    assert r["prefill_s"] <= r["ttft_s"] and r["frames"] > 0 and r["new_tokens"] >= 0, r
    lo, hi = r["span"]
    assert lo - 1e-6 <= r["kept_span"][0] <= r["kept_span"][1] <= hi + 1e-6, r


def test_the_entry_point_registers_the_model():
    from lmms_eval.models import get_model

    from streamprune.integrations.lmms_eval import StreamPrune

    assert get_model("streamprune") is StreamPrune


def test_offline_run_writes_results_samples_and_sane_rows(offline, root):
    docs = root[1]
    res = offline.results["results"]
    assert 0.0 <= res["sp_videomme"]["videomme_perception_score,none"] <= 100.0
    assert {"sp_ovo_backward", "sp_ovo_realtime", "sp_ovo_forward"} <= set(res)
    assert offline.results["config"]["model"] == "streamprune"
    vm = offline.samples["sp_videomme"]
    assert len(vm) == len(docs["videomme"]) == 6
    rows = {r["doc_id"]: r for r in offline.rows_of("sp_videomme")}
    assert set(rows) == {s["doc_id"] for s in vm}
    for s in vm:
        r = rows[s["doc_id"]]
        _check_row(r, BUDGET)
        assert r["protocol"] == "offline" and r["method"] == "subspace"
        assert s["filtered_resps"] == r["text"]  # the logged answer is the text the model gave
        tc = s["token_counts"][0]
        assert tc["output_tokens"] == r["new_tokens"] and tc["input_tokens"] > r["tokens_to_llm"]
        assert s["videomme_perception_score"]["pred_answer"] in ("", "A", "B", "C", "D")  # lmms-eval's extraction
    # the two questions on one clip share its one read: same tokens, same decode time
    by_video = {}
    for r in rows.values():
        by_video.setdefault(r["video"], []).append(r)
    assert len(by_video) == 3
    for rs in by_video.values():
        assert len(rs) == 2 and rs[0]["tokens_seen"] == rs[1]["tokens_seen"] and rs[0]["decode_s"] == rs[1]["decode_s"]
        assert rs[0]["tokens_seen"] > BUDGET  # the budget really prunes


def test_offline_ovo_reads_each_question_its_own_chunk(offline, root):
    docs = root[1]
    for task in ("sp_ovo_backward", "sp_ovo_realtime"):
        rows = offline.rows_of(task)
        part = task.removeprefix("sp_")
        assert len(rows) == len(docs[part]) == len(offline.samples[task])
        for r in rows:
            doc = docs[part][r["doc_id"]]
            _check_row(r, BUDGET)
            assert Path(r["video"]).name == f"{doc['id']}.mp4" and r["span"][1] <= doc["realtime"] + 1e-6
    fwd = offline.rows_of("sp_ovo_forward")
    assert sorted((r["doc_id"], r["round"]) for r in fwd) == [(d, k) for d in range(2) for k in range(3)]
    for s in offline.samples["sp_ovo_forward"]:
        assert len(s["filtered_resps"]) == 3  # one answer per round, as the task's multi-round protocol asks


def test_full_run_gives_every_token_and_the_pruned_run_fewer(full, offline):
    assert 0.0 <= full.results["results"]["sp_videomme"]["videomme_perception_score,none"] <= 100.0
    pruned = {r["doc_id"]: r for r in offline.rows_of("sp_videomme")}
    rows = full.rows_of("sp_videomme")
    assert len(rows) == 6
    for r in rows:
        _check_row(r, None)
        assert r["method"] == "full" and r["retention"] == 1.0 and r["retention_target"] == 1.0
        assert r["tokens_predicted"] == r["tokens_seen"]  # constant frame size: the prediction is exact
        p = pruned[r["doc_id"]]
        assert p["tokens_seen"] == r["tokens_seen"] and p["tokens_to_llm"] < r["tokens_to_llm"]


def _streaming_checks(run: Run, docs: dict, method: str) -> None:
    assert {"sp_ovo_backward", "sp_ovo_realtime", "sp_ovo_forward"} <= set(run.results["results"])
    single = run.rows_of("sp_ovo_backward") + run.rows_of("sp_ovo_realtime")
    assert len(single) == len(docs["ovo_backward"]) + len(docs["ovo_realtime"])
    groups = {}
    for r in single:
        _check_row(r, BUDGET)
        assert r["method"] == method and r["protocol"] == "streaming"
        doc = docs[r["task"].removeprefix("sp_")][r["doc_id"]]
        assert r["query_time"] == doc["realtime"]
        # asked when playback reached its time: nothing in memory, nothing given to the LLM, is later
        assert r["span"][1] <= doc["realtime"] + 1e-6 and r["kept_span"][1] <= doc["realtime"] + 1e-6, r
        groups.setdefault(doc["video"], []).append(r)
    assert len(groups) == 2
    for rs in groups.values():  # one stream per source video: its longest chunk, questions in time order
        assert len({r["video"] for r in rs}) == 1 and Path(rs[0]["video"]).name.startswith("HLD_")
        rs.sort(key=lambda r: r["query_time"])
        seen = [r["tokens_seen"] for r in rs]
        assert seen == sorted(seen) and seen[0] < seen[-1]
        assert all(r["tokens_kept"] <= BUDGET for r in rs)  # memory = budget: the memory is flat
    fwd = run.rows_of("sp_ovo_forward")
    assert len(fwd) == 6
    for d in range(2):
        rounds = sorted((r for r in fwd if r["doc_id"] == d), key=lambda r: r["round"])
        times = [r["query_time"] for r in rounds]
        assert times == sorted(times) and [r["round"] for r in rounds] == [0, 1, 2]
        for r in rounds:
            _check_row(r, BUDGET)
            assert r["span"][1] <= r["query_time"] + 1e-6
        assert [r["frames"] for r in rounds] == sorted(r["frames"] for r in rounds)  # one stream, growing


def test_streaming_ovo_asks_each_question_at_its_time(streaming, offline, root):
    _streaming_checks(streaming, root[1], "subspace")
    # each round's clip is read from where the last stopped: the stream sees what the round's own clip holds
    # (but for a last frame still waiting for its block partner)
    off = {(r["doc_id"], r["round"]): r for r in offline.rows_of("sp_ovo_forward")}
    for r in streaming.rows_of("sp_ovo_forward"):
        assert off[(r["doc_id"], r["round"])]["frames"] - r["frames"] in (0, 1), r


def test_window_baseline_keeps_only_recent_frames(window, root):
    _streaming_checks(window, root[1], "window")
    # memory 24 < two blocks of 15 tokens (two frames, 1 s at fps 2): what is kept is from the last two blocks
    late = [r for r in window.rows if r["tokens_seen"] >= 2 * r["memory"]]
    assert late and all(r["kept_span"][0] >= r["span"][1] - 2.0 for r in late), late


# ---------------------------------------------------------------- in-process: options, retention, refusals
def _instance(ctx: str, video: str, doc_id: int = 0, gen=None):
    from lmms_eval.api.instance import Instance

    return Instance(request_type="generate_until", idx=0, metadata={"task": "t", "doc_id": doc_id, "repeats": 1},
                    arguments=(ctx, dict(gen or {"max_new_tokens": 4}), lambda doc: [doc["path"]], doc_id, "t", "test"))


def test_retention_ratio_sets_the_budget_from_the_video(root, tmp_path):
    from streamprune.integrations.lmms_eval import StreamPrune

    base = root[0]
    video = str(base / "hf" / "videomme" / "data" / "clip0.mp4")
    log = tmp_path / "rows.jsonl"
    m = StreamPrune(pretrained=str(base / "model"), retention_ratio=0.4, method="uniform", fps=2, device="cpu",
                    log_path=str(log))
    m.task_dict = {"t": {"test": [{"path": video}]}}
    out = m.generate_until([_instance("What colour is the square?", video)])
    assert len(out) == 1 and isinstance(out[0].text, str)
    (r,) = [json.loads(ln) for ln in log.read_text().splitlines()]
    assert r["tokens_predicted"] == r["tokens_seen"] and r["budget"] == round(0.4 * r["tokens_seen"])
    assert r["tokens_to_llm"] == r["budget"] and abs(r["retention"] - 0.4) <= 1 / r["tokens_seen"]
    assert r["retention_target"] == 0.4


@pytest.mark.parametrize("kw, msg", [
    ({"budget": 0}, "budget must be an integer >= 1"),
    ({"budget": 8, "retention_ratio": 0.5}, "not both"),
    ({"retention_ratio": 1.5}, "retention_ratio must be a number"),
    ({"batch_size": 4}, "batch_size must be 1"),
    ({"protocol": "live"}, "protocol must be one of"),
    ({"method": "nope"}, "unknown (selection )?method .nope."),
    ({"protocol": "streaming", "max_frames": 8}, "max_frames"),
    ({"method": "full", "budget": 8}, "method=full"),
    ({"frobnicate": 1}, "unknown model_args frobnicate"),
])
def test_bad_model_args_are_one_line_errors(kw, msg):
    from streamprune.integrations.lmms_eval import StreamPrune

    with pytest.raises(ValueError, match=msg) as e:
        StreamPrune(pretrained="/nonexistent", **kw)  # refused before any model loads
    assert "\n" not in str(e.value)


def test_loglikelihood_and_non_video_visuals_are_refused(root):
    from streamprune.integrations.lmms_eval import StreamPrune, cut_at, video_of

    m = StreamPrune(pretrained=str(root[0] / "model"), device="cpu", log_path="none")
    with pytest.raises(NotImplementedError, match="loglikelihood"):
        m.loglikelihood([])
    with pytest.raises(ValueError, match="gives int visuals"):
        video_of([3], "imgtask")
    with pytest.raises(ValueError, match="gives 2 videos"):
        video_of(["a.mp4", ["b.mp4"]], "two")
    assert video_of([["a.mp4"]], "t") == "a.mp4"
    assert cut_at("B. red\nUSER: more", ["\nUSER", ""]) == "B. red" and cut_at("C", None) == "C"


def test_qa_suite_reads_the_real_runs(offline, full):
    """bench qa over these lmms-eval output folders: the scores lmms-eval wrote, the realised retention from
    streamprune's log, and accuracy relative to the full-token run."""
    from streamprune.bench import qa

    rows = qa.add_relative(qa.read_run(offline.out) + qa.read_run(full.out))
    vm = {r["method"]: r for r in rows if r["task"] == "sp_videomme"}
    assert (vm["full"]["budget"], vm["subspace"]["budget"]) == ("full", BUDGET)
    for run, r in ((offline, vm["subspace"]), (full, vm["full"])):
        assert r["value"] == run.results["results"]["sp_videomme"]["videomme_perception_score,none"]
        mine = run.rows_of("sp_videomme")
        assert r["n"] == r["questions"] == len(mine) == 6
        assert math.isclose(r["retention"], sum(x["retention"] for x in mine) / 6)
    assert vm["full"]["retention"] == 1.0 > vm["subspace"]["retention"]
    if vm["full"]["value"]:
        assert math.isclose(vm["subspace"]["relative"], vm["subspace"]["value"] / vm["full"]["value"])
    else:  # a random-weight model rarely answers with a letter: the ratio is undefined, and says so
        assert math.isnan(vm["subspace"]["relative"]) and vm["subspace"]["relative_note"] == "full-token score is 0"
    assert {r["task"] for r in rows} >= {"sp_ovo_backward", "sp_ovo_realtime", "sp_ovo_forward"}


def test_an_unreadable_video_is_logged_and_left_unanswered(root, tmp_path):
    from streamprune.integrations.lmms_eval import StreamPrune

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    good = str(root[0] / "hf" / "videomme" / "data" / "clip1.mp4")
    log = tmp_path / "rows.jsonl"
    m = StreamPrune(pretrained=str(root[0] / "model"), budget=8, fps=2, device="cpu", log_path=str(log))
    m.task_dict = {"t": {"test": [{"path": str(bad)}, {"path": good}]}}
    out = m.generate_until([_instance("What colour?", str(bad), 0), _instance("What colour?", good, 1)])
    assert out[0].text == "" and isinstance(out[1].text, str)
    rows = {r["doc_id"]: r for r in map(json.loads, log.read_text().splitlines())}
    assert "error" in rows[0] and "\n" not in rows[0]["error"] and rows[1]["tokens_to_llm"] <= 8
