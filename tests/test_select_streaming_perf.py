"""StreamingSelector's block-level engine: segment state agrees with a from-scratch rebuild after block adds
and block evictions, the kept basis equals the first-generation engine's (bench.streaming_v1) where both are
exact, segment buffers follow the rank both ways, host syncs are O(1) per push, and nothing periodic spikes."""

import pytest
import torch

from streamprune.bench.streaming_v1 import StreamingSelector as StreamingSelectorV1
from streamprune.select import StreamingSelector

try:  # helper module of the bench (one sync counter for every benchmark); the kernel bench has the same one
    from streamprune.bench.syncs import count_syncs
except ImportError:  # pragma: no cover - until bench/syncs.py exists
    from streamprune.bench.kernel_bench import count_syncs


def run_stream(K, d, blocks, weights=False, n=49, seed=0, **opts):
    """Every third block random, the others near a rank-24 subspace (n tokens per block)."""
    g = torch.Generator().manual_seed(seed)
    rank = 24
    basis = torch.randn(rank, d, generator=g)  # (rank, d)
    sel = StreamingSelector(K, **opts)
    for b in range(blocks):
        if b % 3 == 0:
            X = torch.randn(n, d, generator=g)
        else:
            X = torch.randn(n, rank, generator=g) @ basis + 0.05 * torch.randn(n, d, generator=g)
        w = torch.rand(n, generator=g) if weights else None
        sel.push(X, float(b), weights=w)
    return sel


def check_state(sel):
    """Segment buffers agree with a from-scratch rebuild: members, features, basis, Gram inverse, scores."""
    members = []
    for seg in sel._segments:
        r = seg.rank
        if not r:  # only the current segment may be empty (opened by a block that then added nothing)
            assert seg is sel._current
            continue
        slots = seg.slots
        members += slots
        assert sel._seg[seg.idx].tolist() == [seg.sid] * r and sel._pos[seg.idx].tolist() == list(range(r))
        S = seg.S  # (r, d)
        assert torch.equal(S, sel._raw[seg.idx] * sel._sw[seg.idx, None])
        Q = seg.Q.double()  # (d, r)
        assert torch.allclose(Q.T @ Q, torch.eye(r, dtype=torch.float64), atol=1e-4)
        Sd = S.double()
        assert torch.allclose(Sd.T - Q @ (Q.T @ Sd.T), torch.zeros_like(Sd.T), atol=1e-3 * float(Sd.abs().max()))
        G = Sd @ Sd.T
        assert torch.allclose(seg.Ginv @ G, torch.eye(r, dtype=torch.float64), atol=1e-3)
        if sel.eviction == "leverage":
            assert torch.allclose(sel._score[seg.idx], 1.0 / torch.diagonal(seg.Ginv))
    alive = sel._alive.nonzero().reshape(-1).tolist()
    fill = (sel._alive & (sel._seg < 0)).nonzero().reshape(-1).tolist()
    assert sorted(members + fill) == sorted(alive) and len(members) == len(set(members))
    assert len(alive) <= sel.budget and len(alive) == sel._count
    ids = sel.memory.ids
    assert torch.all(ids[1:] > ids[:-1])


@pytest.mark.parametrize("K,d,blocks,weights,opts", [
    (64, 48, 100, False, {}),
    (64, 48, 100, False, dict(eviction="usage")),
    (64, 48, 100, False, dict(segment_novelty=0.3)),
    (64, 48, 60, False, dict(recycle="cluster")),
    (40, 32, 80, True, dict(segment_rank=10)),
    (256, 256, 120, False, {}),  # segments grow past the initial capacity 64 to the cap 128
    (48, 64, 80, False, dict(coverage=0.0)),
])
def test_state_matches_a_rebuild(K, d, blocks, weights, opts):
    sel = run_stream(K, d, blocks, weights=weights, **opts)
    assert len(sel.memory) == K  # the budget is spent
    check_state(sel)


def test_kept_basis_equals_the_first_generation_engine_where_exact():
    # four rank-6 scenes, no eviction needed by the old engine: both take the same greedy picks per block
    g = torch.Generator().manual_seed(3)
    old, new = StreamingSelectorV1(64), StreamingSelector(64)
    for b in range(40):
        if b % 10 == 0:
            scene = torch.randn(6, 48, generator=g)
        x = torch.randn(16, 6, generator=g) @ scene + 1e-4 * torch.randn(16, 48, generator=g)
        old.push(x, float(b))
        new.push(x, float(b))
    basis_ids = new._ids[torch.cat([s.idx for s in new._segments])]
    assert len(old.memory) < 64 and sorted(basis_ids.tolist()) == old.memory.ids.tolist()
    assert len(new.memory) == 64  # and the new one spends the rest of the budget


def test_segment_buffers_grow_and_shrink():
    sel = run_stream(200, 128, 30, segment_rank=100)
    assert max(seg.rank for seg in sel._segments) > 64 and all(seg._idx.numel() <= 100 for seg in sel._segments)
    check_state(sel)
    g = torch.Generator().manual_seed(100)
    for b in range(40):  # new random content: old segments lose members, their buffers shrink with them
        sel.push(torch.randn(49, 128, generator=g), 100.0 + b)
        check_state(sel)
    for seg in sel._segments:
        assert seg._idx.numel() <= max(32, 4 * seg.rank)


@pytest.mark.parametrize("n", [16, 128])
def test_host_syncs_are_constant_per_push(n):
    g = torch.Generator().manual_seed(0)
    sel, counts = StreamingSelector(512), []
    for b in range(30):
        x = torch.randn(n, 256, generator=g)
        with count_syncs() as c:
            sel.push(x, float(b))
        counts.append(c["total"])
    # bounded by a constant (statistics, pick counts, segments touched, eviction rounds), not by n tokens
    assert max(counts) <= 40 and max(counts[-10:]) <= 30, counts


def test_no_periodic_spikes_in_push_work():
    # the old engine rebuilt a segment every 256 updates; now every push does the same kind of work: count
    # the heavy kernels (QR / matmul calls) per push and check the count does not jump periodically
    calls = {"n": 0}
    qr = torch.linalg.qr

    def counted(*a, **kw):
        calls["n"] += 1
        return qr(*a, **kw)

    g = torch.Generator().manual_seed(1)
    sel, per = StreamingSelector(96), []
    torch.linalg.qr = counted
    try:
        for b in range(300):
            calls["n"] = 0
            sel.push(torch.randn(8, 64, generator=g), float(b))
            per.append(calls["n"])
    finally:
        torch.linalg.qr = qr
    assert max(per[20:]) <= 3  # a QR of the picks and one re-orthogonalisation per segment touched
    assert sel.orthonormality_error() < 1e-4
