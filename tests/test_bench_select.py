"""The select suite follows the one bench protocol; push / rss rows measure both engines on small shapes."""

import json
import math

import pytest

from streamprune.bench import push_bench, select_suite
from streamprune.bench.protocol import SuiteOptions


def test_plan_parts_and_unknown_part(tmp_path):
    opts = SuiteOptions(out=tmp_path, quick=True, extra={"parts": ["push", "rss", "needles"]})
    units = select_suite.plan(opts)
    parts = {u.params["part"] for u in units}
    assert parts == {"push", "rss", "needles"}
    assert len({u.id for u in units}) == len(units)
    rss = [u for u in units if u.params["part"] == "rss"]
    assert {(u.params["d"], u.params["K"]) for u in rss} == {(1536, 1024), (1536, 4096), (3584, 1024), (3584, 4096)}
    with pytest.raises(ValueError):
        select_suite.plan(SuiteOptions(out=tmp_path, extra={"parts": ["bogus"]}))


def test_push_row_measures_both_engines_and_report_renders(tmp_path):
    row = push_bench.push_row({"stream": "hard", "d": 96, "K": 64, "n": 32, "measure": 3})
    for e in ("v1", "v2"):
        assert row[f"{e}_ms"] > 0 and row[f"{e}_kept"] == 64 and row[f"{e}_orthonormality"] < 1e-4
        assert row[f"{e}_syncs_per_push"] > 0  # counted, not guessed
    assert row["yardstick_ms"] > 0 and math.isclose(row["speedup"], row["v1_ms"] / row["v2_ms"])
    rss = push_bench.rss_row({"engine": "v2", "d": 64, "K": 96, "n": 32, "tokens": 3200})
    assert rss["max_memory"] == 96 and rss["rss_mb_full"] > 0 and rss["rss_end_over_full"] > 0
    assert rss["rss_mb_settled"] > 0 and rss["rss_end_over_settled"] > 0  # 100 blocks: settled = the end
    rows = [{"part": "push", **row}, {"part": "rss", **rss}]
    md = select_suite.report(rows, SuiteOptions(out=tmp_path))
    assert md.startswith("## select") and "| hard | 96 | 64 |" in md and "| v2 | 64 | 96 |" in md


def test_quality_goals_list_every_miss():
    q = [{"stream": "long180-effnet", "budget": 128, "method": "subspace", "local_recon": 0.5, "max_gap_s": 4.0,
          "recon_ratio": 2.0, "needle_events": 1.0},
         {"stream": "long180-effnet", "budget": 128, "method": "random", "local_recon": 0.4, "max_gap_s": 8.0,
          "recon_ratio": 2.5, "needle_events": 0.0},
         {"stream": "long180-effnet", "budget": 128, "method": "offline", "local_recon": 0.6, "max_gap_s": 9.0,
          "recon_ratio": 1.5, "needle_events": 1.0}]
    text = select_suite._quality_goals(q)
    assert "2 missed" in text and "local err <= random" in text and "recon <= 1.1 x offline" in text


def test_quality_goals_over_realisations_count_each_goal():
    def cell(stream, method, needles, local):
        return {"stream": stream, "budget": 128, "method": method, "local_recon": local, "max_gap_s": 4.0,
                "recon_ratio": 2.0, "needle_events": needles}

    q = [cell("long180-effnet", "subspace", 1.0, 0.3), cell("long180-effnet", "random", 0.0, 0.4),
         cell("long180-effnet", "offline", 1.0, 0.6),
         # the perturbed realisation: a needle lost, and judged against its own random / offline rows
         cell("long180-effnet~p1", "subspace", 5 / 6, 0.3), cell("long180-effnet~p1", "random", 0.0, 0.2),
         cell("long180-effnet~p1", "offline", 1.0, 0.6)]
    text = select_suite._quality_goals(q)
    assert "Goals (2 missed)" in text
    assert "- long180-effnet~p1 K=128: MISSED local err <= random; needle recall 1.00" in text
    assert "Goals over 2 realisations" in text and "2 of 4 held on every one" in text
    assert "- long180-effnet K=128: needle recall 1.00: 1/2" in text
    assert "- long180-effnet K=128: max gap <= random: 2/2" in text
    assert "Goals over" not in select_suite._quality_goals(q[:3])  # one realisation: no such list


def test_push_ab_against_a_commit(tmp_path, capsys):
    # the engine of a commit (here HEAD: the same code) against the working tree, on the same blocks
    from pathlib import Path

    from streamprune.bench import push_ab

    if not (Path(push_ab.__file__).resolve().parents[2] / ".git").exists():
        pytest.skip("needs a git checkout of streamprune")
    out = tmp_path / "ab.json"
    assert push_ab.main(["--rev", "HEAD", "--only", "hard-1536-1024", "--blocks", "2", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["stream"], r["d"], r["K"]) for r in rows] == [("hard", 1536, 1024)]
    assert rows[0]["rev_ms"] > 0 and rows[0]["now_ms"] > 0 and rows[0]["spread_ms"] > 0
    assert "| hard | 1536 | 256 | 1024 |" in capsys.readouterr().out
    assert push_ab.main(["--rev", "no-such-rev"]) == 2
