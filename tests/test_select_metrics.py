"""bench.metrics and bench.streams (the measures and inputs of the selection suite)."""

import math

import pytest
import torch

from streamprune.bench.metrics import local_reconstruction, needle_recall, reconstruction_ratio, temporal_coverage
from streamprune.bench.streams import pixel_patch_blocks, synthesize_clip, synthetic_stream


def test_reconstruction_ratio_hits_the_svd_bound_on_orthogonal_rows():
    X = torch.diag(torch.tensor([5.0, 4.0, 3.0, 2.0]))
    assert reconstruction_ratio(X, [0, 1]) == pytest.approx(1.0)
    assert reconstruction_ratio(X, [2, 3]) == pytest.approx((25 + 16) / (9 + 4))
    assert math.isnan(reconstruction_ratio(X, [0, 1, 2, 3]))  # k >= rank: 0/0
    Y = torch.cat([X, X])
    assert reconstruction_ratio(Y, [0, 4, 1]) > 1.0  # a duplicate wastes a pick
    with pytest.raises(ValueError):
        reconstruction_ratio(X, [7])


def test_reconstruction_ratio_inf_when_bound_is_zero_but_residual_is_not():
    X = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])  # rank 2
    assert math.isinf(reconstruction_ratio(X, [0, 1]))  # k=2 >= rank, but both kept rows are parallel


def test_local_reconstruction_windows():
    X = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    t = torch.tensor([0.0, 1.0, 2.0, 10.0])
    assert local_reconstruction(X, t, [0, 1, 2, 3], 0.0) == 0.0
    assert local_reconstruction(X, t, [], 5.0) == 1.0
    # kept token 0 explains token 1 (window 1 s), not token 3 (10 s away); token 2 is orthogonal
    assert local_reconstruction(X, t, [0], 1.0) == pytest.approx((0 + 0 + 1 + 1) / 4)
    assert local_reconstruction(X, t, [0], 100.0) == pytest.approx((0 + 0 + 1 + 0) / 4)


def test_needle_recall_and_temporal_coverage():
    events = [torch.tensor([1, 2]), torch.tensor([10, 11, 12, 13])]
    assert needle_recall([2, 50], events) == (0.5, 1 / 6)
    assert all(math.isnan(v) for v in needle_recall([1], []))
    assert temporal_coverage([3.0, 5.0], 0.0, 10.0) == 5.0
    assert temporal_coverage([], 2.0, 4.0) == 2.0
    with pytest.raises(ValueError):
        temporal_coverage([1.0], 5.0, 1.0)


def test_synthetic_stream_is_lazy_repeatable_and_labels_needles():
    s = synthetic_stream(200, 16, 24, needles=4, needle_len=2, needle_tokens=3, fps=2.0, seed=9)
    a, b = list(s), list(s)
    assert len(a) == 200 and all(torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert a[3][0] == 1.5 and a[3][1].shape == (16, 24) and a[3][1].dtype == torch.float32
    X = torch.cat([x for _, x in a])
    assert len(s.events) == 4 and all(e.numel() == 6 for e in s.events)
    for e, (t0, t1) in zip(s.events, s.event_times):
        blocks = (e // 16).unique()
        assert blocks.numel() == 2 and t0 == float(blocks[0]) / 2 and t1 - t0 == 1.0
        # needle tokens are far from the scene: poorly explained by the block's other tokens
        b = int(blocks[0])
        others = [i for i in range(b * 16, b * 16 + 16) if i not in set(e.tolist())]
        Q = torch.linalg.qr(X[others].T).Q
        r = X[e[0]] - Q @ (Q.T @ X[e[0]])
        assert r.norm() > 0.5 * X[e[0]].norm()
    with pytest.raises(ValueError):
        synthetic_stream(10, 4, 4, needles=9)


def test_pixel_patch_blocks_on_a_synthesised_clip(tmp_path):
    clip = synthesize_clip(tmp_path / "c.mp4", seconds=2.0, fps=10, size=(64, 96))
    blocks = list(pixel_patch_blocks(clip, fps=4.0, patch=16, size=(32, 48)))
    times = [t for t, _ in blocks]
    assert len(blocks) == 8 and all(i / 4 - 1e-6 <= t < i / 4 + 0.1 for i, t in enumerate(times))
    x = blocks[0][1]
    assert x.shape == (6, 768) and x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    assert len(list(pixel_patch_blocks(clip, fps=None, size=32))) == 20
    with pytest.raises(ValueError):
        list(pixel_patch_blocks(clip, patch=16, size=(30, 48)))
    with pytest.raises(ValueError):
        list(pixel_patch_blocks(tmp_path / "missing.mp4"))
