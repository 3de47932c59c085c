"""bench runner: resume after a kill, shards merged == one process, robust part files, CLI merge."""

import json
import math

import pytest

from streamprune.bench import runner
from streamprune.bench.runner import Unit


def _units(n=7):
    return [Unit(f"toy/u{i}", {"i": i, "scale": 3}) for i in range(n)]


def _run_unit(u):
    i = u.params["i"]
    return [{"i": i, "sq": i * i * u.params["scale"], "half": i / 2}, {"i": i, "sq": -i, "half": math.nan}]


def _strip(rows):
    return [json.dumps(r, sort_keys=True) for r in rows]


def test_unit_id_is_stable_and_depends_on_params():
    a, b = Unit("x", {"k": 1, "m": [1, 2]}), Unit("x", {"m": [1, 2], "k": 1})
    assert a.id == b.id and a.id.startswith("x#")
    assert Unit("x", {"k": 2}).id != Unit("x", {"k": 1}).id


def test_killed_and_resumed_equals_uninterrupted(tmp_path):
    calls = []

    def counting(u):
        calls.append(u.name)
        return _run_unit(u)

    one = tmp_path / "one"
    runner.run_units("toy", _units(), _run_unit, one)
    rows_one, missing = runner.merge(one, "toy")
    assert not missing and len(rows_one) == 14

    two = tmp_path / "two"
    s = runner.run_units("toy", _units(), counting, two, max_units=3)  # "killed" after 3 units
    assert s.stopped_early and s.ran == 3
    _, missing = runner.merge(two, "toy")
    assert len(missing) == 4
    s = runner.run_units("toy", _units(), counting, two)  # resumed
    assert s.skipped == 3 and s.ran == 4 and not s.stopped_early
    assert calls == [f"toy/u{i}" for i in range(7)]  # no unit ran twice
    rows_two, missing = runner.merge(two, "toy")
    assert not missing
    assert _strip(rows_two) == _strip(rows_one)
    assert (two / "toy.csv").read_text() == (one / "toy.csv").read_text()


def test_truncated_last_line_is_ignored_and_rerun(tmp_path):
    runner.run_units("toy", _units(4), _run_unit, tmp_path)
    p = runner.part_path(tmp_path, "toy", 0, 1)
    lines = p.read_text().splitlines(keepends=True)
    p.write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2])  # killed mid-write of unit 3
    assert len(runner.done_ids(tmp_path, "toy")) == 3
    s = runner.run_units("toy", _units(4), _run_unit, tmp_path)
    assert s.ran == 1
    rows, missing = runner.merge(tmp_path, "toy")
    assert not missing and [r["i"] for r in rows] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_two_shards_merged_equal_one_process(tmp_path):
    runner.run_units("toy", _units(), _run_unit, tmp_path / "one")
    rows_one, _ = runner.merge(tmp_path / "one", "toy")
    sh = tmp_path / "sh"
    a = runner.run_units("toy", _units(), _run_unit, sh, rank=0, world=2)
    b = runner.run_units("toy", _units(), _run_unit, sh, rank=1, world=2)
    assert (a.mine, b.mine) == (4, 3) and a.ran + b.ran == 7
    assert len(runner.part_files(sh, "toy")) == 2
    rows_sh, missing = runner.merge(sh, "toy")
    assert not missing and _strip(rows_sh) == _strip(rows_one)


def test_parse_shard():
    assert runner.parse_shard(None, {}) == (0, 1)
    assert runner.parse_shard("2/4", {}) == (2, 4)
    assert runner.parse_shard(None, {"RANK": "1", "WORLD_SIZE": "3"}) == (1, 3)
    assert runner.parse_shard("0/2", {"RANK": "1", "WORLD_SIZE": "3"}) == (0, 2)
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(ValueError):
            runner.parse_shard(bad, {})


def test_duplicate_unit_ids_rejected(tmp_path):
    with pytest.raises(ValueError, match="duplicate"):
        runner.run_units("toy", [Unit("a", {}), Unit("a", {})], _run_unit, tmp_path)


def test_cli_merge_and_errors(tmp_path, capsys):
    from streamprune.cli import main

    assert main(["bench", "merge", str(tmp_path)]) == 2  # nothing there: one line, exit 2
    assert "no bench results" in capsys.readouterr().err
    runner.run_units("toy", _units(3), _run_unit, tmp_path)
    assert main(["bench", "merge", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "toy" in out or "sq" in out
    assert (tmp_path / "toy.csv").read_text().splitlines()[0].startswith("unit,i,sq,half")
    assert main(["bench", "--suite", "nope", "--out", str(tmp_path)]) == 2
    assert main(["bench", "--suite", "features", "--shard", "3/2", "--out", str(tmp_path)]) == 2


def test_claims_share_a_slice_and_dead_claims_are_taken_over(tmp_path):
    import os
    import socket

    units = _units(4)
    host = socket.gethostname()
    live = runner._claim_path(tmp_path, "toy", units[1].id)
    live.parent.mkdir(parents=True)
    live.write_text(f"{host} {os.getppid()}")  # another live process is running unit 1
    dead = runner._claim_path(tmp_path, "toy", units[2].id)
    dead.write_text(f"{host} 999999999")  # a killed run's leftover claim
    s = runner.run_units("toy", units, _run_unit, tmp_path)
    assert s.ran == 3 and runner.done_ids(tmp_path, "toy") == {units[i].id for i in (0, 2, 3)}
    assert live.exists() and not dead.exists()
    live.unlink()
    assert runner.run_units("toy", units, _run_unit, tmp_path).ran == 1  # the other process died: finish its unit


def test_a_subset_rerun_keeps_the_plan_order(tmp_path):
    runner.run_units("toy", _units(4), _run_unit, tmp_path)
    runner.run_units("toy", _units(4)[2:], _run_unit, tmp_path)  # e.g. --methods with a subset
    rows, missing = runner.merge(tmp_path, "toy")
    assert not missing and [r["i"] for r in rows][::2] == [0, 1, 2, 3]


# ---------------------------------------------------------------- the one suite protocol (bench.protocol)
def _toy_module(calls):
    """A suite module following bench.protocol, registered under a made-up name by the tests below."""
    import types

    from streamprune.bench.protocol import Option, positive
    from streamprune.bench.report import markdown_rows

    mod = types.ModuleType("streamprune_test_toy_suite")
    mod.OPTIONS = (Option("n", positive(int), 5, "units", quick_default=3),)

    def plan(opts):
        return [Unit(f"toy/u{i}", {"i": i, "device": opts.device}) for i in range(opts.extra["n"])]

    def run_unit(u, opts):
        calls.append(u.params["i"])
        return [{"i": u.params["i"], "method": "subspace", "device": opts.device, "model": opts.model}]

    mod.plan, mod.run_unit = plan, run_unit
    mod.report = lambda rows, opts: "## toy suite\n\n" + markdown_rows(rows, [("i", "i", "d"), ("method", "method", "s")])
    return mod


@pytest.fixture
def toy(monkeypatch):
    import sys

    from streamprune.bench import suites

    calls = []
    monkeypatch.setitem(sys.modules, "streamprune_test_toy_suite", _toy_module(calls))
    monkeypatch.setitem(suites.REGISTRY, "toy", "streamprune_test_toy_suite")
    return calls


def test_cli_writes_out_and_one_json_file_and_a_resumed_run_skips_done_units(tmp_path, toy, capsys):
    from streamprune.cli import main

    out, js = tmp_path / "out", tmp_path / "all.json"
    argv = ["bench", "--suite", "toy", "--out", str(out), "--json", str(js), "--device", "cpu", "--model", "tiny"]
    assert main([*argv, "--opt", "n=4", "--max-units", "2"]) == 0
    assert toy == [0, 1]
    doc = json.loads(js.read_text())
    assert doc["suite"] == "toy" and [r["i"] for r in doc["rows"]] == [0, 1] and len(doc["missing_units"]) == 2
    assert main([*argv, "--opt", "n=4"]) == 0  # resumed: units 0 and 1 are not run again
    assert toy == [0, 1, 2, 3]
    doc = json.loads(js.read_text())
    assert [r["i"] for r in doc["rows"]] == [0, 1, 2, 3] and doc["missing_units"] == []
    assert all(r["device"] == "cpu" and r["model"] == "tiny" and r["method"] == "subspace" for r in doc["rows"])
    assert doc["options"]["n"] == 4 and doc["options"]["device"] == "cpu"
    for f in ("toy.jsonl", "toy.csv", "toy.md"):
        assert (out / f).is_file(), f
    assert len((out / "toy.jsonl").read_text().splitlines()) == 4
    stdout = capsys.readouterr().out
    assert "## toy suite" in stdout and "| 3 | subspace |" in stdout
    assert (out / "toy.md").read_text().startswith("## toy suite") and "| 3 | subspace |" in (out / "toy.md").read_text()


def test_quick_default_and_unknown_or_bad_suite_options_are_one_line_errors(tmp_path, toy, capsys):
    from streamprune.bench import suites
    from streamprune.cli import main

    assert suites.options("toy", quick=True).extra == {"n": 3}
    assert suites.options("toy").extra == {"n": 5}
    cases = [(["--suite", "toy", "--opt", "nope=1"], "suite toy has no option 'nope' (its options: n)"),
             (["--suite", "toy", "--presets", "x"], "suite toy has no option 'presets'"),
             (["--suite", "toy", "--opt", "n=-1"], "suite toy, option n: expected a positive number"),
             (["--suite", "toy", "--opt", "n"], "--opt wants KEY=VALUE"),
             (["--suite", "readers", "--opt", "nope=1"], "suite readers has no option 'nope'"),
             (["--suite", "nope"], "unknown suite 'nope'")]
    for extra, phrase in cases:
        assert main(["bench", "--out", str(tmp_path), *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and phrase in err and len(err.splitlines()) == 1, (extra, err)
    assert toy == []  # nothing ran


def test_every_registered_suite_plans_in_quick_with_the_same_options(tmp_path):
    from streamprune.bench import suites

    assert set(suites.SUITES) == {"features", "scaling", "qa", "select", "readers", "decoder", "ask", "live-soak"}
    for name in suites.SUITES:
        given = {"runs": str(tmp_path / "lmms-run")} if name == "qa" else {}  # qa: read a run (no lmms-eval here)
        opts = suites.options(name, given=given, out=tmp_path / name, quick=True, device="cpu", threads=1)
        units = suites.load_suite(name).plan(opts)
        assert units and all(isinstance(u, Unit) for u in units), name
        runner.check_unique(units)
        json.dumps([u.params for u in units])  # params are JSON: ids are stable across runs


def test_model_option_reaches_ask_and_decoder_and_a_tiny_model_is_the_default(tmp_path, monkeypatch):
    from streamprune.bench import ask_suite, decoder_suite, suites
    from streamprune.bench.protocol import model_kind

    assert model_kind(None) == model_kind("tiny") == ("tiny", "qwen2_vl")
    assert model_kind("random:qwen2-vl-7b") == ("random", "qwen2-vl-7b")
    assert model_kind("some/checkpoint") == ("checkpoint", "some/checkpoint")

    def dec(model):
        return decoder_suite.plan(suites.options("decoder", out=tmp_path, quick=True, model=model))

    tiny, big = dec(None)[0].params, dec("random:qwen2-vl-2b")[0].params
    assert (tiny["hidden"], tiny["layers"]) == (256, 4)  # --quick: a small decoder
    assert (big["hidden"], big["layers"], big["heads"], big["kv_heads"], big["intermediate"]) == (1536, 28, 12, 2, 8960)
    assert dec("random:qwen2-vl-7b:layers=3")[0].params["layers"] == 3
    with pytest.raises(ValueError, match="random-weight Qwen2 decoder"):
        dec("Qwen/Qwen2-VL-2B-Instruct")

    built = []

    class Stop(Exception):
        pass

    def fake_load(model, folder, *, device=None, dtype=None, **kw):
        built.append((model, device, dtype))
        raise Stop

    monkeypatch.setattr(ask_suite, "load_adapter", fake_load)
    ask_suite._ADAPTER.clear()
    for model, want in ((None, None), ("random:qwen2-vl-2b", "random:qwen2-vl-2b")):
        opts = suites.options("ask", out=tmp_path, quick=True, model=model, device="cpu", dtype="bfloat16")
        units = ask_suite.plan(opts)
        assert all(u.params["model"] == (model or "tiny") for u in units)
        with pytest.raises(Stop):
            ask_suite.run_unit(units[0], opts)
        assert built[-1] == (want, "cpu", "bfloat16")


def test_ask_quick_writes_out_and_json_with_the_tiny_model(tmp_path, capsys):
    from streamprune.cli import main

    out, js = tmp_path / "o", tmp_path / "ask.json"
    assert main(["bench", "--suite", "ask", "--quick", "--out", str(out), "--json", str(js),
                 "--opt", "minutes=0.1,0.2", "--opt", "full_fallback=0"]) == 0
    rows = json.loads(js.read_text())["rows"]
    assert [(r["minutes"], r["arm"]) for r in rows] == [(0.1, "pruned"), (0.1, "full"), (0.2, "pruned"), (0.2, "full")]
    assert all(r["model"] == "tiny" and r["real_frames"] for r in rows)
    pruned, full = rows[2], rows[3]
    assert pruned["tokens_seen"] == full["tokens_to_llm"] > pruned["tokens_to_llm"]
    assert pruned["tokens_to_llm"] == 32 and pruned["tokens_kept"] <= 128  # --quick budget and memory
    assert (out / "ask.jsonl").is_file() and (out / "ask.md").read_text().startswith("## ask")
    assert "| tiny | 12 s | pruned |" in capsys.readouterr().out
