"""refine_swaps: monotone error, termination, unique same-size output, local optimality vs brute force,
gain over greedy on low-rank-plus-noise data, weights, determinism, bad input; refine options."""

import itertools

import pytest
import torch

from streamprune.bench.metrics import reconstruction_ratio
from streamprune.select import make_selector, select_subspace
from streamprune.select.greedy import refine_swaps
from streamprune.select.streaming import Memory, final_select


def _err(X, idx, w=None):
    A = X.double() if w is None else X.double() * w.double().sqrt()[:, None]
    Q = torch.linalg.qr(A[torch.as_tensor(idx)].T).Q
    return float((A - A @ Q @ Q.T).pow(2).sum())


def _lowrank(n, d, r, noise, seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, r, generator=g) @ torch.randn(r, d, generator=g) + noise * torch.randn(n, d, generator=g)
    return X * (0.2 + 3 * torch.rand(n, 1, generator=g))  # uneven row norms: greedy's weak spot


@pytest.mark.parametrize("seed", range(12))
def test_never_worse_unique_same_size(seed):
    g = torch.Generator().manual_seed(100 + seed)
    n, d = int(torch.randint(5, 80, (1,), generator=g)), int(torch.randint(2, 40, (1,), generator=g))
    k = int(torch.randint(1, min(n, d) + 1, (1,), generator=g))
    X = _lowrank(n, d, max(1, d // 3), 0.2, seed)
    w = torch.rand(n, generator=g) + 0.05 if seed % 3 == 0 else None
    start = torch.randperm(n, generator=g)[:k]  # random start: far from a local optimum
    out = refine_swaps(X, start, weights=w)
    assert out.dtype == torch.long and out.numel() == k and len(set(out.tolist())) == k
    assert int(out.min()) >= 0 and int(out.max()) < n
    assert _err(X, out, w) <= _err(X, start, w) * (1 + 1e-9) + 1e-9
    unchanged = out == start  # swapped entries replaced in place
    assert set(out[unchanged].tolist()) <= set(start.tolist())


def test_single_swap_local_optimum_matches_brute_force():
    X = _lowrank(40, 12, 4, 0.3, 7)
    k = 4
    out = refine_swaps(X, select_subspace(X, k), f=1.0 + 1e-9, candidates=40, max_swaps=10_000)
    e = _err(X, out)
    for i, j in itertools.product(range(k), range(40)):  # no single swap improves (by more than 1e-9)
        if j in out.tolist():
            continue
        t = out.tolist()
        t[i] = j
        assert _err(X, t) >= e * (1 - 1e-6)


def test_improves_over_greedy_toward_svd_bound():
    ratios = []
    for seed in range(3):
        X = _lowrank(600, 64, 24, 0.3, seed)
        g = select_subspace(X, 16)
        s = refine_swaps(X, g)
        ratios.append((reconstruction_ratio(X, g), reconstruction_ratio(X, s)))
    for rg, rs in ratios:
        assert rs <= rg
    assert sum(rs for _, rs in ratios) / 3 < 0.9 * sum(rg for rg, _ in ratios) / 3  # measurable drop


def test_terminates_and_respects_max_swaps():
    X = _lowrank(300, 32, 10, 0.5, 3)
    start = torch.arange(8)  # poor start: many improving swaps exist
    one = refine_swaps(X, start, max_swaps=1)
    assert int((one != start).sum()) == 1
    assert torch.equal(refine_swaps(X, start, max_swaps=0), start)
    full = refine_swaps(X, start, max_swaps=10_000)  # returns (finite improving sequence)
    assert _err(X, full) < _err(X, one) < _err(X, start)


def test_deterministic_and_n_below_d():
    X = _lowrank(30, 90, 10, 0.2, 5)  # n < d: the (n, n) factor path
    start = torch.arange(0, 30, 3)
    a, b = refine_swaps(X, start), refine_swaps(X.clone(), start.clone())
    assert torch.equal(a, b)
    assert _err(X, a) < _err(X, start)
    assert torch.equal(refine_swaps(X.double(), start), a)  # float32 math whatever the input dtype


def test_dependent_kept_rows_are_replaced():
    X = _lowrank(50, 20, 6, 0.1, 2)
    X[1] = 2 * X[0]  # kept rows 0 and 1 span one direction
    out = refine_swaps(X, torch.tensor([0, 1, 2]), max_swaps=1)
    assert len(set(out.tolist())) == 3 and _err(X, out) < _err(X, [0, 1, 2])


def test_spanning_or_trivial_input_is_unchanged():
    X = torch.randn(20, 3)
    assert torch.equal(refine_swaps(X, torch.tensor([0, 1, 2])), torch.tensor([0, 1, 2]))  # spans R^3: E = 0
    assert refine_swaps(X, torch.zeros(0, dtype=torch.long)).numel() == 0
    assert torch.equal(refine_swaps(X, torch.arange(20)), torch.arange(20))


@pytest.mark.parametrize("bad", [dict(idx=torch.tensor([0, 0])), dict(idx=torch.tensor([0, 20])),
                                 dict(idx=torch.tensor([[0, 1]])), dict(idx=torch.tensor([0.0, 1.0])),
                                 dict(f=0.5), dict(max_swaps=-1), dict(weights=-torch.ones(20))])
def test_bad_input(bad):
    X = torch.randn(20, 5)
    kw = {"idx": torch.tensor([0, 1])} | bad
    with pytest.raises(ValueError):
        refine_swaps(X, kw.pop("idx"), **kw)
    with pytest.raises(ValueError):
        refine_swaps(X.clone().fill_(float("nan")), torch.tensor([0, 1]))


def test_offline_and_final_refine_options():
    X = _lowrank(400, 48, 16, 0.3, 9)
    plain = make_selector("offline", 12)
    ref = make_selector("offline", 12, refine=True)
    for b in range(10):
        plain.push(X[40 * b: 40 * (b + 1)], float(b))
        ref.push(X[40 * b: 40 * (b + 1)], float(b))
    ip, ir = plain.memory.ids, ref.memory.ids
    assert len(ir) == 12 and torch.equal(ir, torch.sort(ir).values)
    assert _err(X, ir) < _err(X, ip)
    mem = Memory(X, torch.zeros(400, dtype=torch.float64), torch.arange(400), None)
    f0, f1 = final_select(mem, 12), final_select(mem, 12, refine=True)
    assert torch.equal(f0, torch.sort(ip).values) and _err(X, f1) < _err(X, f0)
    sel = make_selector("ours", 64, novelty=0.001, final_refine=True)
    for b in range(10):
        sel.push(X[40 * b: 40 * (b + 1)], float(b))
    m = sel.memory.tokens
    got = sel.final(8)
    assert _err(m, got) < _err(m, torch.sort(select_subspace(m, 8)).values)
