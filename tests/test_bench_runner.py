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


def test_external_suites_get_only_the_options_they_declare(monkeypatch):
    import argparse

    from streamprune.bench import suites

    ns = argparse.Namespace(suite="readers", quick=True, device="cpu", threads=1, dtype=None,
                            suite_args="--minutes 1")
    from streamprune.bench import readers_suite, select_suite

    assert suites.external_argv(select_suite, ns) == ["--quick", "--device", "cpu", "--threads", "1", "--minutes", "1"]
    assert suites.external_argv(readers_suite, ns) == ["--minutes", "1"]
    seen = []
    monkeypatch.setattr(readers_suite, "main", lambda argv: seen.append(argv) or 0)
    assert suites.run(ns) == 0 and seen == [["--minutes", "1"]]

    def bad(argv):
        raise SystemExit(2)
    monkeypatch.setattr(readers_suite, "main", bad)
    with pytest.raises(ValueError, match="rejected"):
        suites.run(ns)
