"""features suite: metrics agree with bench.metrics, needles land where they are said to, end to end via CLI."""

import json
import math

import numpy as np
import pytest
import torch

from streamprune.bench import features as F
from streamprune.bench import frames as FR
from streamprune.bench import metrics, runner


def test_vector_metrics_match_index_metrics():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(60, 12, generator=g) @ torch.randn(12, 20, generator=g)  # (60, 20) rank 12
    times = torch.arange(60, dtype=torch.float64) // 6
    idx = torch.tensor([0, 7, 13, 22, 31, 40, 55])
    s2 = F.squared_singular_values(X)
    assert torch.allclose(s2, torch.linalg.svdvals(X.double()).pow(2), rtol=1e-6, atol=1e-6)
    r_vec = metrics.reconstruction_ratio_vectors(X, s2, X[idx])
    assert r_vec == pytest.approx(metrics.reconstruction_ratio(X, idx), rel=1e-6)
    assert r_vec > 1.0
    lv = metrics.local_reconstruction_vectors(X, times, X[idx], times[idx], 2.0)
    assert lv == pytest.approx(metrics.local_reconstruction(X, times, idx, 2.0), abs=1e-9)


def test_needle_cells_and_pasted_object():
    nd = FR.Needle(start=0, length=1, y=40, x=100, obj=0)
    cells = FR.needle_cells(nd, 72, 224, 7).tolist()
    # 32 px cells; y 40..112 covers 24, 32, 16 px of rows 1, 2, 3; x 100..172 covers 28, 32, 12 of cols 3, 4, 5
    assert cells == [r * 7 + c for r in (1, 2, 3) for c in (3, 4)]
    v = FR.long_video(12, seg_seconds=4, needles=2, needle_seconds=2, seed=1)
    assert v.frames.shape == (12, 224, 224, 3) and len(v.needles) == 2
    for nd in v.needles:
        patch = v.frames[nd.start, nd.y:nd.y + 72, nd.x:nd.x + 72]
        assert np.array_equal(patch, v.objects[nd.obj])
    assert [s[0] for s in v.segments] == list(FR.LONG_SOURCES[:3])


def test_effnet_tokens_shape_and_are_real_features():
    v = FR.long_video(4, seg_seconds=2, needles=0)
    tok = FR.effnet_tokens(v.frames[:2])
    assert tok.shape == (2, 49, 1280) and torch.isfinite(tok).all()
    assert tok.std() > 0.1  # pretrained, non-degenerate activations
    px = FR.pixel_tokens(v.frames[:2])
    assert px.shape == (2, 49, 192) and 0 <= px.min() and px.max() <= 1


def test_measure_on_synthetic_stream_is_sane():
    spec = F.QUICK_STREAMS["synthetic-d64"]
    st = F.build_stream("syn", spec)
    assert st.X.shape == (30 * 16, 64) and len(st.events) == 2
    off = F.measure(st, "offline", 32)
    uni = F.measure(st, "uniform", 32)
    assert off["kept"] == 32 and off["needle_events"] == 1.0
    assert off["recon_ratio"] >= 1.0 - 1e-6 and off["local_recon"] < uni["local_recon"]
    assert uni["needle_events"] == 0.0 and uni["max_gap_s"] > off["max_gap_s"]
    ours = F.measure(st, "ours", 8)
    assert ours["kept"] <= 8 and ours["ms_per_block"] > 0 and ours["peak_mb"] >= ours["state_mb"] > 0


def test_plan_skips_question_variants_without_queries():
    units = F.plan_units({"s": F.QUICK_STREAMS["synthetic-d64"]}, ["ours", "ours+spare", "random"], [4, 8])
    assert [u.params["method"] for u in units] == ["ours", "ours", "random", "random"]
    with pytest.raises(ValueError, match="unknown method"):
        F.plan_units({"s": F.QUICK_STREAMS["synthetic-d64"]}, ["bogus"], [4])


def test_perturbed_realisations_are_small_seeded_and_planned():
    st = F.build_stream("syn", F.QUICK_STREAMS["synthetic-d64"])
    a, a2, b = F.perturbed(st, 1), F.perturbed(st, 1), F.perturbed(st, 2)
    assert a.name == "syn~p1" and torch.equal(a.X, a2.X) and not torch.equal(a.X, b.X)
    rms = float(st.X.pow(2).mean().sqrt())
    noise = float((a.X - st.X).pow(2).mean().sqrt())
    assert noise == pytest.approx(F.PERTURB_REL * rms, rel=0.1)
    assert torch.allclose(a.s2, torch.linalg.svdvals(a.X.double()).pow(2), rtol=1e-6, atol=1e-6)
    assert torch.equal(a.times, st.times) and all(torch.equal(x, y) for x, y in zip(a.events, st.events))
    with pytest.raises(ValueError, match="seed"):
        F.perturbed(st, 0)
    units = F.plan_units({"s": F.QUICK_STREAMS["synthetic-d64"]}, ["random"], [4], perturb=2)
    assert [u.name for u in units] == ["features/s/random/k4", "features/s~p1/random/k4", "features/s~p2/random/k4"]
    assert "perturb" not in units[0].params and units[2].params["perturb"] == 2  # old plans resume unchanged
    with pytest.raises(ValueError, match="perturb"):
        F.plan_units({"s": F.QUICK_STREAMS["synthetic-d64"]}, ["random"], [4], perturb=-1)


def _cli(out, *extra):
    from streamprune.cli import main

    return main(["bench", "--suite", "features", "--streams", "synthetic-d64", "--methods", "ours,random,offline",
                 "--budgets", "8,24", "--out", str(out), *extra])


def test_cli_end_to_end_resume_and_shards(tmp_path, capsys):
    assert _cli(tmp_path / "one") == 0
    table = capsys.readouterr().out
    assert "synthetic-d64" in table and "offline" in table
    rows_one = [json.loads(ln) for ln in (tmp_path / "one" / "features.jsonl").read_text().splitlines()]
    assert len(rows_one) == 6 and {r["method"] for r in rows_one} == {"ours", "random", "offline"}
    assert (tmp_path / "one" / "features-quality-synthetic-d64.png").stat().st_size > 10_000

    quality = lambda rows: [[r["unit"]] + [r[k] for k in F.QUALITY_KEYS] for r in rows]  # noqa: E731
    res = tmp_path / "resumed"
    assert _cli(res, "--max-units", "2") == 0  # killed after 2 units
    assert len(runner.done_ids(res, "features")) == 2
    assert _cli(res) == 0
    rows_res = [json.loads(ln) for ln in (res / "features.jsonl").read_text().splitlines()]
    assert _eq(quality(rows_res), quality(rows_one))

    sh = tmp_path / "sh"
    assert _cli(sh, "--shard", "1/2") == 0
    assert _cli(sh, "--shard", "0/2") == 0
    rows_sh = [json.loads(ln) for ln in (sh / "features.jsonl").read_text().splitlines()]
    assert _eq(quality(rows_sh), quality(rows_one))


def test_cli_perturbed_realisations(tmp_path):
    from streamprune.cli import main

    assert main(["bench", "--suite", "features", "--streams", "synthetic-d64", "--methods", "random",
                 "--budgets", "8", "--opt", "perturb=2", "--out", str(tmp_path)]) == 0
    rows = [json.loads(ln) for ln in (tmp_path / "features.jsonl").read_text().splitlines()]
    assert sorted((r["stream"], r["perturb"]) for r in rows) == [
        ("synthetic-d64", 0), ("synthetic-d64~p1", 1), ("synthetic-d64~p2", 2)]
    assert len({r["local_recon"] for r in rows}) == 3  # each realisation measured on its own features
    assert sorted(p.name for p in tmp_path.glob("features-quality-*.png")) == ["features-quality-synthetic-d64.png"]
    assert main(["bench", "--suite", "features", "--streams", "synthetic-d64", "--opt", "perturb=-1",
                 "--out", str(tmp_path / "bad")]) == 2


def _eq(a, b):
    def same(x, y):
        if isinstance(x, float) and isinstance(y, float):
            return (math.isnan(x) and math.isnan(y)) or x == y
        return x == y
    return len(a) == len(b) and all(len(r) == len(s) and all(same(x, y) for x, y in zip(r, s)) for r, s in zip(a, b))
