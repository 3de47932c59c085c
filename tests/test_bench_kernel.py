"""The host-sync counter (streamprune.bench.syncs) and the kernel bench's protocol functions."""

import json

import pytest
import torch

from streamprune.bench import kernel_bench as kb
from streamprune.bench.syncs import count_syncs
from streamprune.select.greedy import select_subspace


def test_count_syncs_counts_each_kind_and_restores_torch():
    x = torch.randn(10)
    saved = (torch.Tensor.item, torch.Tensor.__getitem__, torch.Tensor.to, torch.nonzero, torch.where)
    with count_syncs() as n:
        float(x[0])
        x.sum().item()
        x[x > 0]
        x.nonzero()
        torch.nonzero(x)
        x.to("cpu")
        x.to(torch.float64)  # a dtype change: no sync
        x.tolist()
        bool(x[0] > 0)
        torch.where(x > 0)
        torch.where(x > 0, x, -x)  # three arguments: no sync
        x[1:3] = 0.0  # plain slice: no sync
        with count_syncs() as inner:
            int(x.argmax())
    assert n == {"total": 10, "__float__": 1, "item": 1, "mask_index": 1, "nonzero": 2, "to_cpu": 1,
                 "tolist": 1, "__bool__": 1, "where": 1, "__int__": 1}
    assert inner == {"total": 1, "__int__": 1}
    assert (torch.Tensor.item, torch.Tensor.__getitem__, torch.Tensor.to, torch.nonzero, torch.where) == saved
    with count_syncs() as none:
        (x * 2).sum()
    assert none == {"total": 0}


def test_count_syncs_restores_after_an_exception():
    saved = torch.Tensor.item
    with pytest.raises(RuntimeError), count_syncs():
        raise RuntimeError("boom")
    assert torch.Tensor.item is saved


def test_select_subspace_syncs_do_not_grow_with_k():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(3000, 512, generator=g)  # k well below the rank: no drift recheck
    counts = []
    for k in (32, 128, 400):
        with count_syncs() as n:
            select_subspace(X, k)
        counts.append(n["total"])
    with count_syncs() as before:
        kb._select_subspace_reference(X, 400)
    assert max(counts) <= 8, counts  # setup + one look per block of picks (blocks grow to 256)
    assert before["total"] >= 2 * 400  # the previous kernel: float(e) and int(j) per pick


def test_kernel_units_cover_the_issue_grid():
    full = kb.kernel_units(quick=False)
    shapes = {(u["n"], u["d"], u["k"]) for u in full}
    assert shapes == {(n, d, k) for n in (2000, 4096, 20000) for d in (768, 1536, 3584) for k in (64, 256, 1024)}
    assert len(full) == 27 and all(u["reps"] == 3 and u["device"] == "cpu" for u in full)
    quick = {(u["n"], u["d"], u["k"]) for u in kb.kernel_units(quick=True)}
    assert quick < shapes and [(u["n"], u["d"], u["k"]) for u in full[: len(quick)]] == sorted(
        quick, key=lambda s: s[0] * s[1] * s[2])
    assert (full[len(quick)]["n"], full[len(quick)]["d"]) == (20000, 1536)  # the must-have row next
    json.dumps(full)  # plain params


def test_kernel_row_measures_one_shape(monkeypatch):
    monkeypatch.setattr(kb, "SMALL_CASE_S", 0.0)
    monkeypatch.setattr(kb, "COLD_BYTES", 4 * 600 * 64 * 3)  # three copies of A for the cold yardstick
    r = kb.kernel_row({"n": 600, "d": 64, "k": 48, "reps": 2})
    assert (r["n"], r["d"], r["k"], r["reps"], r["cold_copies"]) == (600, 64, 48, 2, 3)
    for key in ("matvec_s", "matvec_cold_s", "before_s", "after_s"):
        assert r[key] > 0
    assert r["ratio_after"] == pytest.approx(r["after_s"] / r["matvec_s"])
    assert r["ratio_after_cold"] == pytest.approx(r["after_s"] / r["matvec_cold_s"])
    assert r["syncs_before"] >= 2 * 48 and r["syncs_after"] < 10
    assert r["syncs_per_pick_after"] == pytest.approx(r["syncs_after"] / 48)
    assert r["same_picks"] in (True, False) and r["same_set"] in (True, False)
    text = kb.markdown([r], "cmd")
    assert "| 600 | 64 | 48 | 2 |" in text and "Command: `cmd`" in text
    json.dumps(r)


def test_tie_gap_is_zero_for_the_same_row_and_signed_otherwise():
    g = torch.Generator().manual_seed(2)
    X = torch.randn(200, 16, generator=g)
    picks = select_subspace(X, 5).tolist()
    assert kb._tie_gap(X, picks, 3, picks[3], picks[3]) == 0.0
    other = next(i for i in range(200) if i not in picks)
    assert kb._tie_gap(X, picks, 3, picks[3], other) > 0  # the greedy pick has the larger residual energy


def test_main_writes_markdown_and_resumes_from_jsonl(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(kb, "SMALL_CASE_S", 0.0)
    parts = tmp_path / "rows.jsonl"
    argv = ["--only", "300,32,20", "--reps", "1", "--jsonl", str(parts), "--out", str(tmp_path / "k.md")]
    assert kb.main(argv) == 0
    first = parts.read_text()
    assert kb.main(argv) == 0  # the row is reused, not measured again
    assert parts.read_text() == first
    assert "| 300 | 32 | 20 | 1 |" in (tmp_path / "k.md").read_text()
    with pytest.raises(SystemExit):
        kb.main(["--only", "10,5,20"])  # k >= n
    capsys.readouterr()
