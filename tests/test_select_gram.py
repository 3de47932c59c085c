"""select.gram: greedy selection from a maintained Gram (pivoted Cholesky + exact row-kernel finish), and the
StreamingSelector's Gram of its memory (question_gram): same picks as the row kernel and the scipy pivoted-QR
oracle, the fallback path, consistency over pushes with evictions, bad input, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

import streamprune.select.gram as gram_mod
from streamprune.bench.syncs import count_syncs
from streamprune.select import StreamingSelector, final_select, memory_bytes, question_select, select_subspace
from streamprune.select.gram import GRAM_TOL, gram_greedy, gram_question_select, gram_update
from streamprune.select.streaming import gram_auto


def _scipy_order(X, w=None):
    A = X.double().numpy().T
    if w is not None:
        A = A * np.sqrt(w.double().numpy())[None]
    return scipy.linalg.qr(A, pivoting=True, mode="r")[1]


def _gram(X):
    return X @ X.T  # float32, as the selector keeps it


def _decaying(m, d, low, seed, scale=30.0):
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(m, d, generator=g)).Q
    V = torch.linalg.qr(torch.randn(d, d, generator=g)).Q
    return (U * torch.logspace(0, math.log10(low), d)) @ V.T * scale  # singular values 1 .. low (x scale)


@pytest.mark.parametrize("seed", range(24))
def test_same_picks_as_row_kernel_and_scipy(seed):
    g = torch.Generator().manual_seed(seed)
    m = int(torch.randint(20, 300, (1,), generator=g))
    d = int(torch.randint(8, 96, (1,), generator=g))
    k = int(torch.randint(1, min(m, d) + 1, (1,), generator=g))
    X = torch.randn(m, d, generator=g) * (torch.rand(m, 1, generator=g) + 0.2)
    w = torch.rand(m, generator=g) + 0.05 if seed % 2 else None
    got = gram_greedy(X, _gram(X), k, w)
    assert got.dtype == torch.long and got.numel() == k == len(set(got.tolist()))
    assert got.tolist() == select_subspace(X, k, w).tolist()
    assert got.tolist() == _scipy_order(X, w)[:k].tolist()


@pytest.mark.parametrize("seed", range(8))
def test_rounds_past_the_rank_and_past_d_match_the_row_kernel(seed):
    g = torch.Generator().manual_seed(50 + seed)
    m, d = 120, 24
    r = int(torch.randint(2, 20, (1,), generator=g))
    X = torch.randn(m, r, generator=g) @ torch.randn(r, d, generator=g)
    X[::17] = 0  # zero rows come last
    k = int(torch.randint(r + 1, m + 10, (1,), generator=g))
    w = torch.rand(m, generator=g) + 0.1 if seed % 2 else None
    got = gram_greedy(X, _gram(X), k, w)
    ref = select_subspace(X, k, w)
    assert got.tolist() == ref.tolist()
    assert got[:r].tolist() == _scipy_order(X, w)[:r].tolist()
    zeros = list(range(0, m, 17))
    if k >= m:
        assert got[m - len(zeros):].tolist() == zeros  # zero rows last, in index order


def test_zero_residual_tie_rule_matches():
    e = torch.eye(4)[:2]
    X = torch.cat([e, e, e]) * torch.tensor([[3.0], [2.0], [3.0], [2.0], [3.0], [2.0]])
    assert gram_greedy(X, _gram(X), 6).tolist() == [0, 1, 2, 3, 4, 5]
    X[2] = 0
    assert gram_greedy(X, _gram(X), 6).tolist() == select_subspace(X, 6).tolist() == [0, 1, 4, 3, 5, 2]


@pytest.mark.parametrize("low,seed", [(1e-3, 0), (1e-4, 1), (1e-6, 2)])
def test_fallback_runs_and_stays_exact_on_ill_conditioned_input(low, seed, count_calls):
    X = _decaying(600, 160, low, seed)
    calls = count_calls(gram_mod, "_row_finish")
    k = 150
    st: dict = {}
    stats: dict = {}
    got = gram_greedy(X, _gram(X), k, state=st, stats=stats)
    assert calls["n"] >= 1  # the Cholesky energies fell below GRAM_TOL x top: rows finished the round
    assert stats["row_finishes"] == calls["n"] and 0 < stats["cholesky_picks"] < k
    assert st["exact"] or low < 1e-5  # (at 1e-6 the rows exhaust the rank and a new Cholesky round follows)
    ref = select_subspace(X, k)
    oracle = _scipy_order(X)[:k]
    # exact greedy: both kernels follow the float64 oracle up to its first near tie (a lead float32 cannot
    # resolve; where the row kernel breaks it depends on the CPU's float32 kernels), and where the row kernel
    # agrees with the oracle, so does the Gram path
    tie = _first_near_tie(X, k)
    agree = int(np.argmin(np.append(ref.numpy() == oracle, False)))
    assert tie >= 30 and agree >= tie
    assert got[:tie].tolist() == oracle[:tie].tolist()
    assert got[:agree].tolist() == ref[:agree].tolist()


def _first_near_tie(X, k, tol=1e-6):
    """First pick of float64 greedy whose lead over the runner-up is below tol x the largest row energy."""
    R = X.double().clone()
    e0 = float(R.pow(2).sum(dim=1).max())
    taken = torch.zeros(R.shape[0], dtype=torch.bool)
    for t in range(k):
        e = R.pow(2).sum(dim=1).masked_fill(taken, -1.0)
        top = torch.topk(e, 2).values
        if float(top[0] - top[1]) < tol * e0:
            return t
        j = int(e.argmax())
        taken[j] = True
        q = R[j] / R[j].norm()
        R -= torch.outer(R @ q, q)
    return k


def test_fallback_needed_near_dependent_tokens():
    # pairs of near-duplicates: the second of a pair differs by 1e-4 relative, a residual energy of 1e-8 x its
    # diagonal, below what a float32 Gram resolves; greedy must still take every base row before any twin
    g = torch.Generator().manual_seed(7)
    base = torch.randn(40, 64, generator=g)
    twin = base + 1e-4 * torch.randn(40, 64, generator=g) * base.norm(dim=1, keepdim=True) / 8
    X = torch.cat([base, twin])
    k = 64
    got = gram_greedy(X, _gram(X), k)
    ref = select_subspace(X, k)
    assert set(got[:40].tolist()) == set(ref[:40].tolist())
    assert got[:40].tolist() == ref[:40].tolist() == _scipy_order(X)[:40].tolist()
    # the picks after the first 40 are the twins' residuals (energies ~1e-10 x the diagonal): exact residual
    # energies, not Gram noise. The float32 row kernel itself leaves the float64 oracle later on (pick 56)
    assert got[40:].tolist() == ref[40:].tolist()
    assert got[40:50].tolist() == _scipy_order(X)[40:50].tolist()


@pytest.mark.parametrize("mode", ["resprune", "spare", "relevance", "none"])
@pytest.mark.parametrize("seed", range(4))
def test_question_select_from_the_gram(mode, seed):
    g = torch.Generator().manual_seed(200 + seed)
    m, d = 400, 96
    X = torch.randn(m, d, generator=g)
    r = torch.rand(m, generator=g).clamp(0.01, 1.0)
    for k in (20, 60, 90):
        for alpha in (0.3, 1.0):
            a = gram_question_select(X, _gram(X), k, r, mode=mode, alpha=alpha)
            b = question_select(X, k, r, mode=mode, alpha=alpha)
            assert a.tolist() == b.tolist()
    assert gram_question_select(X, _gram(X), 30, None).tolist() == select_subspace(X, 30).tolist()


@pytest.mark.parametrize("case", ["low_rank", "ill", "k_over_d"])
def test_spare_second_phase_fallbacks(case):
    g = torch.Generator().manual_seed(9)
    if case == "low_rank":  # first phase exhausts the rank: second phase on residual rows and a fresh round
        X = torch.randn(200, 10, generator=g) @ torch.randn(10, 48, generator=g)
        k = 40
    elif case == "ill":  # second phase's Cholesky energies fall below the threshold
        X = _decaying(300, 80, 1e-5, 3)
        k = 70
    else:
        X = torch.randn(100, 16, generator=g)
        k = 40
    r = torch.rand(X.shape[0], generator=g)
    for frac in (0.25, 0.5):
        a = gram_question_select(X, _gram(X), k, r, mode="spare", spare_frac=frac)
        b = question_select(X, k, r, mode="spare", spare_frac=frac)
        assert a.tolist() == b.tolist()
        assert len(set(a.tolist())) == k


@pytest.mark.parametrize("seed", range(4))
def test_slot_indexed_gram_through_an_index(seed):
    g = torch.Generator().manual_seed(300 + seed)
    m, d, cap = 150, 40, 210
    X = torch.randn(m, d, generator=g)
    slots = torch.randperm(cap, generator=g)[:m]
    Xs = torch.randn(cap, d, generator=g)  # free slots hold other rows: never read
    Xs[slots] = X
    r = torch.rand(m, generator=g)
    for mode in ("resprune", "spare", "none"):
        got = gram_question_select(X, Xs @ Xs.T, 30, r, mode=mode, index=slots)
        assert got.tolist() == question_select(X, 30, r, mode=mode).tolist()
    assert gram_greedy(X, Xs @ Xs.T, 60, index=slots).tolist() == select_subspace(X, 60).tolist()


def test_float64_gram_and_low_precision_gram():
    X = torch.randn(300, 64, generator=torch.Generator().manual_seed(4))
    ref = select_subspace(X, 50).tolist()
    assert gram_greedy(X, X.double() @ X.double().T, 50).tolist() == ref
    assert gram_greedy(X, (X @ X.T).half().float(), 50).numel() == 50  # a coarse Gram still gives k distinct


def test_syncs_per_block_not_per_pick():
    X = torch.randn(2000, 300, generator=torch.Generator().manual_seed(5))
    G = _gram(X)
    with count_syncs() as c:
        got = gram_greedy(X, G, 256, torch.rand(2000) + 0.1)
    assert got.numel() == 256
    assert c["total"] <= 12  # setup + one per block of 16, 32, 64, 128, ... picks


def test_deterministic():
    X = _decaying(400, 100, 1e-4, 11)
    w = torch.rand(400, generator=torch.Generator().manual_seed(1))
    runs = [gram_greedy(X, _gram(X), 90, w) for _ in range(3)]
    assert all(torch.equal(runs[0], r) for r in runs[1:])


def test_gram_update_writes_rows_and_columns():
    X = torch.randn(10, 6)
    G = torch.zeros(10, 10)
    gram_update(G, X, torch.arange(10))
    assert torch.allclose(G, X @ X.T)
    X[[2, 7]] = torch.randn(2, 6)
    gram_update(G, X, torch.tensor([2, 7]))
    assert torch.allclose(G, X @ X.T, atol=1e-5)
    gram_update(G, X, torch.zeros(0, dtype=torch.long))  # no-op


@pytest.mark.parametrize("bad", [
    lambda: gram_greedy(torch.randn(5, 3), torch.randn(4, 4), 2),
    lambda: gram_greedy(torch.randn(5, 3), torch.randn(4, 3), 2),
    lambda: gram_greedy(torch.randn(5, 3), torch.eye(8), 2, index=torch.tensor([0, 1, 2, 3, 8])),
    lambda: gram_greedy(torch.randn(5, 3), torch.eye(8), 2, index=torch.arange(4)),
    lambda: gram_greedy(torch.randn(5, 3), torch.eye(8), 2, index=torch.arange(5.0)),
    lambda: gram_greedy(torch.randn(5, 3), "G", 2),
    lambda: gram_greedy(torch.randn(5, 3), torch.ones(5, 5, dtype=torch.long), 2),
    lambda: gram_greedy(torch.tensor([[1.0, float("nan")]]), torch.ones(1, 1), 1),
    lambda: gram_greedy(torch.randn(5, 3), torch.eye(5), -1),
    lambda: gram_greedy(torch.randn(5, 3), torch.eye(5), 2, tol=-1.0),
    lambda: gram_greedy(torch.randn(5, 3), torch.eye(5), 2, -torch.ones(5)),
    lambda: gram_greedy(torch.randn(5, 3), torch.eye(5), 2, torch.ones(4)),
    lambda: gram_question_select(torch.randn(5, 3), torch.eye(5), 2, torch.rand(5), mode="nope"),
    lambda: gram_question_select(torch.randn(5, 3), torch.eye(5), 2, torch.full((5,), 2.0)),
    lambda: StreamingSelector(64, question_gram="yes"),
    lambda: StreamingSelector(64, gram_refresh="never"),
    lambda: StreamingSelector(64, question_gram=True, recycle="nearest"),
    lambda: StreamingSelector(64, question_gram=False).push(torch.randn(4, 3), 0.0) or
    StreamingSelector(64, question_gram=False).memory_gram(),
])
def test_bad_input_raises_value_error(bad):
    with pytest.raises(ValueError):
        bad()


def test_edge_sizes():
    assert gram_greedy(torch.zeros(0, 5), torch.zeros(0, 0), 3).numel() == 0
    assert gram_greedy(torch.randn(4, 5), torch.eye(4), 0).numel() == 0
    assert gram_greedy(torch.zeros(3, 5), torch.zeros(3, 3), 2).tolist() == [0, 1]


def _stream(sel, blocks, n, d, seed, scale_every=3):
    g = torch.Generator().manual_seed(seed)
    for b in range(blocks):
        low = torch.randn(n, 6, generator=g) @ torch.randn(6, d, generator=g)  # repeating content: evictions
        x = low + (0.3 if b % scale_every else 1.5) * torch.randn(n, d, generator=g)
        sel.push(x, float(b))
    return sel


@pytest.mark.parametrize("refresh", ["push", "question"])
def test_selector_gram_stays_consistent_over_pushes_with_evictions(refresh):
    sel = StreamingSelector(80, question_gram=True, gram_refresh=refresh)
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for b in range(120):
        n = int(torch.randint(1, 60, (1,), generator=g))
        x = torch.randn(n, 40, generator=g) * (1 + (b % 4))
        sel.push(x, float(b))
        if b % 10 == 0 or b == 119:
            M = sel.memory.tokens
            G = sel.memory_gram()
            ref = M.double() @ M.double().T
            worst = max(worst, float((G.double() - ref).abs().max() / ref.abs().max()))
            assert G.shape == (len(sel.memory),) * 2
    assert sel.tokens_seen > 5 * 80  # many evictions happened
    assert worst < 1e-5


@pytest.mark.parametrize("mode", ["resprune", "spare", "none"])
def test_selector_final_with_the_gram_equals_the_row_path(mode):
    a = _stream(StreamingSelector(128, question_gram=True, question_mode=mode), 30, 32, 64, 1)
    b = _stream(StreamingSelector(128, question_gram=False, question_mode=mode), 30, 32, 64, 1)
    assert torch.equal(a.memory.ids, b.memory.ids)  # the Gram does not change what is kept
    m = len(a.memory)
    r = torch.rand(m, generator=torch.Generator().manual_seed(3))
    for k in (16, 32, 50):
        ga, gb = a.final(k, r), b.final(k, r)
        assert torch.equal(ga, gb)
        ref = torch.sort(question_select(a.memory.tokens, k, r, mode=mode, alpha=a.alpha)).values
        assert torch.equal(ga, ref)
        assert torch.equal(a.final(k), torch.sort(select_subspace(a.memory.tokens, k)).values)
    assert torch.equal(final_select(a.memory, 20, r, mode=mode, gram=a.memory_gram),
                       final_select(a.memory, 20, r, mode=mode))
    G, index = a.gram_view()  # the slot-indexed form final uses
    assert torch.equal(gram_question_select(a.memory.tokens, G, 20, r, mode=mode, index=index),
                       question_select(a.memory.tokens, 20, r, mode=mode))


def test_final_stays_cheap_without_a_selection(count_calls):
    sel = _stream(StreamingSelector(64, question_gram=True), 12, 16, 32, 2)
    calls = count_calls(sel, "gram_view")
    m = len(sel.memory)
    assert sel.final(m + 5).tolist() == list(range(m))
    assert calls["n"] == 0  # k >= len(memory): no Gram gathered, nothing selected
    first = sel.final(10)
    assert torch.equal(first, sel.final(10)) and calls["n"] == 1  # cached per state and k


def test_gram_auto_rule_and_memory_bytes():
    assert gram_auto(4096, 3584) and gram_auto(4096, 1536) and gram_auto(1024, 3584)
    assert not gram_auto(1024, 1536)  # 6 MiB of tokens: the row kernel runs from the cache
    assert not gram_auto(256, 3584)
    assert not gram_auto(4096, 768)  # 8 d / K = 1.5 < 2: not worth it
    assert not gram_auto(4096, 3584, recycle=True)
    slots = 4096 + 256
    on = memory_bytes(4096, 3584, question_gram=True)
    off = memory_bytes(4096, 3584, question_gram=False)
    assert on - off == (4 * slots + 1) * slots  # the float32 Gram and its refresh mask
    assert memory_bytes(4096, 3584) == on and memory_bytes(256, 3584) == memory_bytes(256, 3584, question_gram=False)
    assert StreamingSelector(64).question_gram == "auto"


def test_selector_holds_at_most_memory_bytes_with_the_gram():
    K, d, n = 96, 48, 32
    sel = _stream(StreamingSelector(K, question_gram=True), 20, n, d, 4)
    assert sel._gram is not None
    assert sel.buffer_bytes() <= memory_bytes(K, d, block=n, question_gram=True)


def test_selector_gram_deterministic():
    r = torch.rand(96, generator=torch.Generator().manual_seed(5))
    outs = []
    for _ in range(2):
        sel = _stream(StreamingSelector(96, question_gram=True), 20, 24, 40, 6)
        outs.append(sel.final(24, r[: len(sel.memory)]))
    assert torch.equal(outs[0], outs[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_same_picks():
    X = torch.randn(500, 128, generator=torch.Generator().manual_seed(8))
    w = torch.rand(500, generator=torch.Generator().manual_seed(9)) + 0.1
    Xc = X.cuda()
    got = gram_greedy(Xc, Xc @ Xc.T, 100, w.cuda())
    assert got.device.type == "cuda" and got.cpu().tolist() == select_subspace(X, 100, w).tolist()


def test_tolerance_constant_is_above_float32_gram_noise():
    assert 1e3 * torch.finfo(torch.float32).eps < GRAM_TOL < 1e-2


def test_gram_refresh_push_vs_question():
    eager = StreamingSelector(64, question_gram=True, gram_refresh="push")
    lazy = StreamingSelector(64, question_gram=True)
    assert lazy.gram_refresh == "question"  # the default
    g = torch.Generator().manual_seed(12)
    for b in range(15):
        x = torch.randn(24, 32, generator=g)
        eager.push(x, float(b))
        lazy.push(x, float(b))
        assert not bool(eager._gram_dirty.any())  # refreshed by the push itself
        alive = eager._alive.nonzero().reshape(-1)
        Xa = eager._raw[alive]
        assert torch.allclose(eager._gram[alive][:, alive], Xa @ Xa.T, rtol=1e-5, atol=1e-4)
    assert bool(lazy._gram_dirty.any())  # nothing computed by the pushes
    r = torch.rand(len(lazy.memory), generator=g)
    assert torch.equal(eager.final(16, r), lazy.final(16, r))
    assert not bool(lazy._gram_dirty.any())
    M = lazy.memory.tokens
    assert torch.allclose(lazy.memory_gram(), M @ M.T, rtol=1e-5, atol=1e-4)


def test_gram_bench_rows_on_tiny_shapes(tmp_path):
    from streamprune.bench import gram_bench, select_suite
    from streamprune.bench.protocol import SuiteOptions

    q = gram_bench.question_row({"data": "gauss", "m": 128, "d": 48, "k": 32, "reps": 1})
    assert q["same_picks"] == "yes" and q["row_ms"] > 0 and q["gram_ms"] > 0 and q["cholesky_picks"] == 32
    dq = gram_bench.question_row({"data": "decay", "m": 128, "d": 96, "k": 40, "reps": 1})
    assert dq["same_picks"] == "yes" and dq["row_finish_calls"] >= 1 and dq["cholesky_picks"] < 40
    p = gram_bench.push_row({"stream": "lowrank", "d": 32, "K": 64, "n": 32, "measure": 2})
    assert p["same_memory"] and p["gram_rel_err"] < 1e-5 and p["gram_mb"] > 0
    assert "row kernel ms" in gram_bench.report([q, p])
    units = select_suite.plan(SuiteOptions(out=tmp_path, quick=True, extra={"parts": ["gram"]}))
    assert units and {u.params["part"] for u in units} == {"gram"}
    assert len({u.name for u in units}) == len(units)  # unit names are unique (resumable runs key on them)
    assert "gram" not in {u.params["part"] for u in select_suite.plan(SuiteOptions(out=tmp_path, quick=True))}
