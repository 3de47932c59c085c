"""StreamingSelector: invariants (hypothesis), static scenes, cuts, needles, K < d and K >= d, bad input."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from streamprune.bench.metrics import needle_recall, reconstruction_ratio
from streamprune.bench.streams import synthetic_stream
from streamprune.select import StreamingSelector, make_selector, select_subspace


def _run(sel, blocks, payload=False):
    for t, x in blocks:
        sel.push(x, t, payload=torch.arange(x.shape[0]) + sel.tokens_seen if payload else None)
    return sel


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(2, 24), budget=st.integers(1, 40),
       sizes=st.lists(st.integers(0, 20), min_size=1, max_size=12), rank=st.integers(1, 24),
       eviction=st.sampled_from(["leverage", "usage"]))
def test_invariants_after_every_push(seed, d, budget, sizes, rank, eviction):
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(min(rank, d), d, generator=g)
    blocks = [(float(i), torch.randn(n, basis.shape[0], generator=g) @ basis) for i, n in enumerate(sizes)]
    sel, seen = StreamingSelector(budget, eviction=eviction), 0
    for t, x in blocks:
        sel.push(x, t, payload=torch.arange(x.shape[0]) + seen)
        seen += x.shape[0]
        m = sel.memory
        assert len(m) == min(budget, seen) and sel.tokens_seen == seen  # never above K, always filled
        for k in (0, 1, budget, budget + 3):
            f = sel.final(k)
            assert f.numel() == min(k, len(m)) and f.unique().numel() == f.numel()
        assert m.ids.unique().numel() == len(m) and bool((m.ids.diff() > 0).all())
        assert m.tokens.dtype == torch.float32 and (not len(m) or torch.equal(m.payload, m.ids))
        assert sel.orthonormality_error() < 1e-4
    again = _run(StreamingSelector(budget, eviction=eviction), blocks)
    assert torch.equal(again.memory.ids, sel.memory.ids)  # deterministic


def test_static_scene_needs_few_basis_tokens_but_the_budget_is_spent():
    g = torch.Generator().manual_seed(0)
    scene = torch.randn(4, 32, generator=g)
    tokens = torch.randn(16, 4, generator=g) @ scene  # rank-4 scene, 16 tokens
    sel = StreamingSelector(200)
    for i in range(300):
        sel.push(tokens + 1e-3 * torch.randn(16, 32, generator=g), float(i))
    assert sel.n_basis <= 6  # rank 4 (+ at most a couple of noise picks) hold basis directions
    assert len(sel.memory) == 200  # the rest of the budget is spent (fill + coverage tokens)
    # coverage: at most coverage x K = 100 bins of a power-of-two width b, W = 2 b: no gap longer than W
    times = sel.memory.times
    gaps = torch.cat([times[:1], times.diff(), torch.tensor([299.0]) - times[-1:]])
    assert float(gaps.max()) <= 2 * sel._bin and sel._bin == 4.0


def test_scene_cut_and_needle_are_kept():
    s = synthetic_stream(400, 32, 48, rank=6, needles=4, needle_len=1, scene_len=200, seed=3)
    sel = _run(StreamingSelector(40), s)
    ids = sel.memory.ids
    assert ((ids >= 200 * 32) & (ids < 201 * 32)).any()  # the cut at block 200
    assert needle_recall(ids, s.events)[0] == 1.0


def test_needle_recall_at_one_percent_budget():
    s = synthetic_stream(600, 64, 96, rank=8, needles=8, needle_len=2, scene_len=60, noise=0.02, seed=5)
    budget = s.n_tokens // 100
    sel = _run(StreamingSelector(budget), s)
    assert needle_recall(sel.memory.ids, s.events)[0] == 1.0
    rnd = _run(make_selector("random", budget, seed=1), s)
    assert needle_recall(rnd.memory.ids, s.events)[0] < 0.5  # the test can tell good from chance


def test_k_below_d_tracks_offline_greedy():
    s = synthetic_stream(60, 32, 64, rank=24, needles=0, scene_len=15, noise=0.05, drift=0.02, seed=2)
    X = torch.cat([x for _, x in s])
    sel = _run(StreamingSelector(24, novelty=0.001), s)
    assert len(sel.memory) == 24
    ours, off = reconstruction_ratio(X, sel.memory.ids), reconstruction_ratio(X, select_subspace(X, 24))
    assert ours <= 1.25 * off, (ours, off)


def _trap_stream(d=16, n=8, blocks=1000, new_at=900):
    g = torch.Generator().manual_seed(7)
    scene = torch.randn(64, d, generator=g)  # spans R^d
    new = 2.0 * torch.randn(n, d, generator=g)
    for b in range(blocks):
        x = new if b == new_at else scene[torch.randperm(64, generator=g)[:n]] + 0.01 * torch.randn(n, d, generator=g)
        yield float(b), x


def test_k_twice_d_new_content_late_enters_memory():
    d, n = 16, 8
    sel = _run(StreamingSelector(2 * d), _trap_stream(d, n))
    ids = sel.memory.ids
    assert len(sel.memory) <= 2 * d and sel.n_segments >= 2
    assert int(((ids >= 900 * n) & (ids < 901 * n)).sum()) >= 2
    # one unsegmented basis spanning R^d is blind to it (the K >= d trap this design avoids)
    trapped = _run(StreamingSelector(2 * d, segment_rank=10**6), _trap_stream(d, n)).memory.ids
    assert int(((trapped >= 900 * n) & (trapped < 901 * n)).sum()) == 0


def test_short_numerical_soak_stays_orthonormal():
    g = torch.Generator().manual_seed(11)
    sel = StreamingSelector(48, novelty=0.0, refresh_every=10_000)  # no refresh: pure up/down-dates
    for b in range(400):
        sel.push(torch.randn(50, 32, generator=g), float(b))
    assert sel.tokens_seen == 20_000 and len(sel.memory) == 48
    assert sel.orthonormality_error() < 1e-4


def test_weights_payload_times_and_dtype():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(10, 8, generator=g).to(torch.float16)
    sel = StreamingSelector(3)
    sel.push(x, torch.arange(10, dtype=torch.float64) * 0.5, weights=torch.tensor([0.0] * 9 + [1.0]),
             payload=torch.arange(30).reshape(10, 3))
    m = sel.memory
    assert m.ids.tolist() == [9]  # zero-weight rows never enter
    assert m.tokens.dtype == torch.float32 and torch.equal(m.tokens[0], x[9].float())
    assert m.times.tolist() == [4.5] and m.payload.tolist() == [[27, 28, 29]]


def test_zero_rows_are_skipped_and_empty_blocks_are_noops():
    sel = StreamingSelector(5)
    sel.push(torch.zeros(3, 4), 0.0)
    sel.push(torch.zeros(0, 4), 1.0)
    assert len(sel.memory) == 0 and sel.tokens_seen == 3
    sel.push(torch.eye(4), 2.0)
    assert sel.memory.ids.tolist() == [3, 4, 5, 6]


def test_recycling_changes_tokens_only():
    s = synthetic_stream(120, 16, 32, rank=6, needles=2, scene_len=30, noise=0.05, seed=4)
    base = _run(StreamingSelector(12), s, payload=True).memory
    for mode in ("nearest", "cluster"):
        m = _run(StreamingSelector(12, recycle=mode), s, payload=True).memory
        assert torch.equal(m.ids, base.ids) and torch.equal(m.times, base.times)
        assert torch.equal(m.payload, base.payload)
        assert not torch.equal(m.tokens, base.tokens)  # evicted tokens were merged in


def test_final_reselects_down_to_k():
    s = synthetic_stream(50, 16, 32, rank=10, needles=0, scene_len=10, seed=6)
    sel = _run(StreamingSelector(30), s)
    m = sel.memory
    f = sel.final(8)
    assert f.numel() == 8 and bool((f.diff() > 0).all())
    assert sorted(f.tolist()) == sorted(select_subspace(m.tokens, 8).tolist())
    assert sel.final(1000).tolist() == list(range(len(m)))
    rel = torch.full((len(m),), 0.01)
    rel[-3:] = 1.0
    q = sel.final(3, relevance=rel)
    assert set(q.tolist()) & {len(m) - 1, len(m) - 2, len(m) - 3}


@pytest.mark.parametrize("bad", [
    lambda s: s.push(torch.tensor([[float("nan"), 1.0, 0.0, 0.0]]), 0.0),
    lambda s: s.push(torch.tensor([[float("inf"), 1.0, 0.0, 0.0]]), 0.0),
    lambda s: s.push(torch.randn(4), 0.0),
    lambda s: s.push(torch.randn(2, 3, 4), 0.0),
    lambda s: s.push(torch.randn(2, 5), 0.0),  # d mismatch
    lambda s: s.push(torch.randn(2, 4), float("nan")),
    lambda s: s.push(torch.randn(2, 4), torch.zeros(3)),
    lambda s: s.push(torch.randn(2, 4), 0.0, weights=torch.tensor([1.0, -1.0])),
    lambda s: s.push(torch.randn(2, 4), 0.0, payload=torch.zeros(3)),
    lambda s: s.final(-1),
    lambda s: s.final(2, relevance=torch.ones(7)),
])
def test_bad_input_raises_and_leaves_state_untouched(bad):
    sel = StreamingSelector(6)
    sel.push(torch.randn(5, 4, generator=torch.Generator().manual_seed(0)), 0.0)
    before = sel.memory
    with pytest.raises(ValueError):
        bad(sel)
    after = sel.memory
    assert torch.equal(before.ids, after.ids) and torch.equal(before.tokens, after.tokens)
    assert sel.tokens_seen == 5 and sel.orthonormality_error() < 1e-4


@pytest.mark.parametrize("budget", [0, -3, 2.5, True])
def test_bad_budget(budget):
    with pytest.raises(ValueError):
        StreamingSelector(budget)


@pytest.mark.parametrize("kw", [dict(eviction="lru"), dict(recycle="mean"), dict(novelty=-1.0),
                                dict(segment_rank=0), dict(segment_novelty=float("nan"))])
def test_bad_options(kw):
    with pytest.raises(ValueError):
        StreamingSelector(8, **kw)


def test_usage_eviction_keeps_the_directions_the_stream_uses():
    # direction a fills blocks 0..9, then b appears once with a larger norm; budget 1
    a, b = torch.eye(8)[0], torch.eye(8)[1]
    blocks = [(float(i), a[None] * (1 + 0.01 * i)) for i in range(10)] + [(10.0, 1.5 * b[None])]
    lev = _run(StreamingSelector(1, novelty=0.0), blocks).memory.ids.tolist()
    use = _run(StreamingSelector(1, novelty=0.0, eviction="usage"), blocks).memory.ids.tolist()
    assert lev == [10] and use == [0]  # leverage keeps the rare larger token, usage the one used 10 times


@pytest.mark.parametrize("K", [8, 24, 64])
def test_coverage_no_stretch_longer_than_w_without_a_kept_token(K):
    # novel content early (a high-rank burst), then a long low-rank stretch: without the coverage term the
    # budget would stay on the burst. W = 2 b, b the selector's bin width (documented in streaming.py).
    g = torch.Generator().manual_seed(K)
    scene = torch.randn(3, 32, generator=g)
    sel = StreamingSelector(K)
    for b in range(200):
        x = torch.randn(8, 32, generator=g) * (3.0 if b < 20 else 0.0) + torch.randn(8, 3, generator=g) @ scene
        sel.push(x, 0.5 * b)
        times = sel.memory.times
        span = 0.5 * b
        gaps = torch.cat([times[:1], times.diff(), torch.tensor([span]) - times[-1:]])
        assert float(gaps.max()) <= max(2 * sel._bin, 0.5) + 1e-9  # (0.5 s: the blocks' own spacing)
        assert sel._bin <= max(4 * span / (0.5 * K), 2.0 ** -20)  # W <= 4 x duration / (coverage x K) ... x 2
    assert len(sel.memory) == K


def test_coverage_off_keeps_the_burst():
    g = torch.Generator().manual_seed(0)
    scene = torch.randn(3, 32, generator=g)
    on, off = StreamingSelector(16, fill="spread"), StreamingSelector(16, coverage=0.0, fill="spread")
    for b in range(200):
        x = torch.randn(8, 32, generator=g) * (3.0 if b < 20 else 0.0) + torch.randn(8, 3, generator=g) @ scene
        on.push(x, float(b))
        off.push(x, float(b))
    assert float(off.memory.times.max()) < 20 <= float(on.memory.times.max())


def test_orthonormality_and_budget_on_a_long_soak():
    # 100k tokens of novel content at K > d / 2 (segments, block adds and block evictions every push)
    g = torch.Generator().manual_seed(12)
    sel, worst = StreamingSelector(80, novelty=0.0), 0.0
    for b in range(2000):
        sel.push(torch.randn(50, 64, generator=g), float(b))
        if b % 100 == 0:
            worst = max(worst, sel.orthonormality_error())
            assert len(sel.memory) == min(80, sel.tokens_seen)
    assert worst < 2e-5 and sel.orthonormality_error() < 2e-5
