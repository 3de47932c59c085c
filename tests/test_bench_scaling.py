"""scaling suite on a tiny model: full vs pruned token counts, OOM recorded and the run goes on."""

import json

import pytest
import torch

from streamprune.bench import scaling


def test_parse_preset():
    assert scaling.parse_preset("qwen2-vl-2b:layers=2,depth=1") == ("qwen2-vl-2b", {"layers": 2, "depth": 1})
    assert scaling.parse_preset("tiny:qwen2_vl") == ("tiny", {"family": "qwen2_vl"})
    for bad in ("nope", "qwen2-vl-2b:layers=0", "qwen2-vl-2b:heads=2", "tiny:nope"):
        with pytest.raises(ValueError):
            scaling.parse_preset(bad)


def test_full_vs_pruned_and_oom_is_recorded(monkeypatch):
    full = scaling.measure("tiny:qwen2_vl", "full", 8, 8, 112, "cpu", None)
    pruned = scaling.measure("tiny:qwen2_vl", "pruned", 8, 8, 112, "cpu", None)
    assert full["status"] == pruned["status"] == "ok"
    assert full["llm_tokens"] == full["visual_tokens"] > pruned["llm_tokens"] and 0 < pruned["llm_tokens"] <= 8
    assert full["peak_mb"] > 0 and full["prefill_s"] > 0 and pruned["select_s"] > 0

    ad = scaling.get_model("tiny:qwen2_vl", "cpu", None)
    real = ad.prefill

    def oom_if_big(mem, q, **kw):
        if len(mem) > 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9 GiB")
        return real(mem, q, **kw)

    monkeypatch.setattr(ad, "prefill", oom_if_big)
    assert scaling.measure("tiny:qwen2_vl", "full", 8, 8, 112, "cpu", None)["status"] == "oom"
    assert scaling.measure("tiny:qwen2_vl", "pruned", 8, 8, 112, "cpu", None)["status"] == "ok"


def test_cli_scaling_end_to_end(tmp_path, capsys):
    from streamprune.cli import main

    rc = main(["bench", "--suite", "scaling", "--presets", "tiny:qwen2_vl", "--frames", "4,8", "--budgets", "8",
               "--device", "cpu", "--out", str(tmp_path)])
    assert rc == 0
    rows = [json.loads(ln) for ln in (tmp_path / "scaling.jsonl").read_text().splitlines()]
    assert [(r["mode"], r["frames"]) for r in rows] == [("full", 4), ("pruned", 4), ("full", 8), ("pruned", 8)]
    assert all(r["status"] == "ok" for r in rows)
    assert rows[2]["llm_tokens"] == 2 * rows[0]["llm_tokens"] and rows[3]["llm_tokens"] <= 8
    assert (tmp_path / "scaling-cost.png").is_file()
    assert "pruned" in capsys.readouterr().out


def test_model_option_names_the_one_preset(tmp_path):
    from streamprune.bench import suites

    def presets(**kw):
        units = scaling.plan(suites.options("scaling", out=tmp_path, quick=True, device="cpu", **kw))
        return sorted({u.params["preset"] for u in units}), sorted({u.params["frames"] for u in units})

    assert presets() == (["qwen2-vl-2b:layers=2,depth=1"], [4, 16])  # CPU default, --quick: two lengths
    assert presets(model="random:qwen2-vl-7b:layers=1")[0] == ["qwen2-vl-7b:layers=1"]
    assert presets(model=None, given={"presets": "tiny:qwen2_vl", "frames": "8"}) == (["tiny:qwen2_vl"], [8])
    assert presets(model="tiny")[0] == ["tiny:qwen2_vl"]
    with pytest.raises(ValueError, match="random-weight models"):
        presets(model="Qwen/Qwen2-VL-2B-Instruct")
