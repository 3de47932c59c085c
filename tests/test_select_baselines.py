"""Every method honours the Selector protocol; each baseline does what its paper describes."""

import pytest
import torch

from streamprune.select import METHODS, make_selector, select_subspace


def _blocks(n_blocks=30, n=12, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(0.5 * b, torch.randn(n, d, generator=g)) for b in range(n_blocks)]


@pytest.mark.parametrize("method", METHODS)
def test_protocol(method):
    budget, seen = 40, 0
    sel = make_selector(method, budget)
    assert sel.budget == budget and sel.tokens_seen == 0 and len(sel.memory) == 0 and sel.n_kept == 0
    blocks = _blocks()
    for t, x in blocks:
        sel.push(x, t, weights=torch.ones(x.shape[0]), payload=torch.arange(x.shape[0]) + seen)
        seen += x.shape[0]
        kept = sel.n_kept  # before the memory is gathered
        m = sel.memory
        assert sel.tokens_seen == seen and 0 < len(m) <= budget and kept == len(m)
        assert bool((m.ids.diff() > 0).all()) and torch.equal(m.payload, m.ids)
        assert torch.equal(m.times, (m.ids // 12).double() * 0.5)
    X = torch.cat([x for _, x in blocks])
    assert torch.equal(m.tokens, X[m.ids])
    f = sel.final(10)
    assert f.numel() == 10 and bool((f.diff() > 0).all()) and int(f.max()) < len(m)
    q = sel.final(5, relevance=torch.linspace(0.01, 1.0, len(m)))
    assert q.numel() == 5 and bool((q.diff() > 0).all())
    sel.push(torch.zeros(0, 16), 99.0)  # empty block: no-op
    assert sel.tokens_seen == seen
    with pytest.raises(ValueError):
        sel.push(torch.randn(3, 17), 100.0)
    with pytest.raises(ValueError):
        sel.push(torch.full((3, 16), float("nan")), 100.0)
    again = make_selector(method, budget)
    for t, x in blocks:
        again.push(x, t, weights=torch.ones(x.shape[0]), payload=torch.zeros(x.shape[0], dtype=torch.long))
    assert torch.equal(again.memory.ids, m.ids)  # deterministic


def test_make_selector_rejects_unknown():
    with pytest.raises(ValueError):
        make_selector("nope", 10)
    with pytest.raises(ValueError):
        make_selector("uniform", 0)
    with pytest.raises(ValueError):
        make_selector("ours", 10, no_such_option=1)


def test_uniform_keeps_evenly_spaced_frames():
    sel = make_selector("uniform", 40)
    for t, x in _blocks(100, 5):
        sel.push(x, t)
    frames = (sel.memory.ids // 5).unique()
    steps = frames.diff().unique()
    assert steps.numel() == 1 and int(frames[0]) == 0 and len(sel.memory) == 5 * frames.numel()


def test_random_is_a_seeded_uniform_sample():
    ids = []
    for seed in range(10):
        sel = make_selector("random", 50, seed=seed)
        for t, x in _blocks(100, 10):
            sel.push(x, t)
        ids.append(sel.memory.ids.double())
    mean = torch.cat(ids).mean().item()
    assert abs(mean - 499.5) < 45  # 500 draws, std of the mean ~13: uniform over 0..999, not biased to old or new
    assert not torch.equal(ids[0], ids[1])


def test_l2_keeps_the_largest_norms():
    sel = make_selector("l2", 7)
    X = torch.cat([x for _, x in _blocks(10, 8)])
    for t, x in _blocks(10, 8):
        sel.push(x, t)
    assert set(sel.memory.ids.tolist()) == set(torch.topk(X.norm(dim=1), 7).indices.tolist())


@pytest.mark.parametrize("method", ["divprune", "dpp", "ours", "offline"])
def test_diversity_methods_skip_duplicates(method):
    g = torch.Generator().manual_seed(2)
    protos = torch.randn(6, 32, generator=g)
    sel = make_selector(method, 6)
    for b in range(20):  # every block repeats the same 6 prototypes (scaled) in shuffled order
        sel.push(protos[torch.randperm(6, generator=g)] * (1 + 0.01 * b), float(b))
    kept = torch.nn.functional.normalize(sel.memory.tokens, dim=1)
    cos = (kept @ torch.nn.functional.normalize(protos, dim=1).T).argmax(dim=1)
    assert sorted(cos.tolist()) == list(range(6))  # one of each prototype


def test_dedup_drops_static_repeats():
    x = torch.randn(8, 16, generator=torch.Generator().manual_seed(3))
    sel = make_selector("dedup", 100)
    for b in range(10):
        y = x.clone()
        if b == 5:
            y[2] = -y[2]  # one position changes
        sel.push(y, float(b))
    assert sel.memory.ids.tolist() == list(range(8)) + [5 * 8 + 2, 6 * 8 + 2]


def test_offline_equals_greedy_over_the_whole_video():
    blocks = _blocks(20, 10)
    X = torch.cat([x for _, x in blocks])
    sel = make_selector("offline", 25)
    for t, x in blocks:
        sel.push(x, t)
    assert sel.memory.ids.tolist() == sorted(select_subspace(X, 25).tolist())


def test_window_keeps_everything_that_fits_then_the_most_recent():
    sel = make_selector("window", 10)
    for b in range(3):  # 9 tokens: all kept
        sel.push(torch.randn(3, 8), float(b))
    assert sel.memory.ids.tolist() == list(range(9))
    sel.push(torch.randn(3, 8), 3.0)  # 12 tokens > 10: the oldest two go
    assert sel.memory.ids.tolist() == list(range(2, 12))
    assert sel.final(4).tolist() == [6, 7, 8, 9]  # the most recent 4, as indices into memory
    assert sel.final(100).tolist() == list(range(10))
    with pytest.raises(ValueError):
        sel.final(-1)
