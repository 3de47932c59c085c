"""text_relevance, question_select modes, density-peak recycling."""

import pytest
import torch

from streamprune.select import default_alpha, density_peak_merge, question_select, select_subspace, text_relevance


def test_text_relevance_is_clipped_max_cosine():
    tok = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    txt = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    r = text_relevance(tok, txt, eps=0.05)
    assert torch.allclose(r, torch.tensor([1.0, 2 ** -0.5, 0.05]))
    with pytest.raises(ValueError):
        text_relevance(tok, torch.zeros(0, 2))
    with pytest.raises(ValueError):
        text_relevance(tok, torch.ones(1, 3))


def test_default_alpha_per_family():
    assert default_alpha("qwen2_5_vl") == 0.3 and default_alpha("llava_onevision") == 0.75


def _data(seed=0, n=40, d=24):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.rand(n, generator=g).clamp_min(0.01)


def test_resprune_is_weighted_greedy_and_alpha_zero_is_plain():
    X, r = _data()
    assert torch.equal(question_select(X, 10, r, alpha=0.0), select_subspace(X, 10))
    assert torch.equal(question_select(X, 10, r, alpha=0.75), select_subspace(X, 10, r.pow(0.75)))
    assert torch.equal(question_select(X, 10, None), select_subspace(X, 10))


def test_relevance_mode_is_top_k():
    X, r = _data()
    assert set(question_select(X, 5, r, mode="relevance").tolist()) == set(torch.topk(r, 5).indices.tolist())


def test_spare_spends_part_of_the_budget_on_low_relevance_context():
    X, r = _data(1, n=60)
    res = question_select(X, 12, r, mode="resprune", alpha=3.0)
    spare = question_select(X, 12, r, mode="spare", alpha=3.0, spare_frac=0.5)
    assert spare.numel() == 12 == spare.unique().numel()
    assert torch.equal(spare[:6], select_subspace(X, 6, r.pow(3.0)))
    assert r[spare[6:]].mean() < r[res].mean()  # the anti-relevance half favours low-relevance tokens
    assert question_select(X, 80, r, mode="spare").numel() == 60


@pytest.mark.parametrize("kw", [dict(mode="bogus"), dict(alpha=-1.0), dict(spare_frac=2.0)])
def test_question_select_bad_options(kw):
    X, r = _data()
    with pytest.raises(ValueError):
        question_select(X, 3, r, **kw)


def test_question_select_bad_relevance():
    X, r = _data()
    with pytest.raises(ValueError):
        question_select(X, 3, r[:5])
    with pytest.raises(ValueError):
        question_select(X, 3, r + 5)


def test_density_peak_merge_finds_blobs_deterministically():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    pts = torch.cat([c + 0.3 * torch.randn(20, 2, generator=g) for c in centres])
    merged, assign = density_peak_merge(pts, 3)
    assert merged.shape == (3, 2) and assign.shape == (60,)
    for b in range(3):  # each blob is one cluster
        assert assign[20 * b:20 * (b + 1)].unique().numel() == 1
        a = int(assign[20 * b])
        assert torch.allclose(merged[a], pts[20 * b:20 * (b + 1)].mean(0), atol=1e-5)
    m2, a2 = density_peak_merge(pts, 3)
    assert torch.equal(a2, assign) and torch.equal(m2, merged)


def test_density_peak_merge_edges():
    x = torch.randn(4, 3)
    m, a = density_peak_merge(x, 10)
    assert torch.equal(m, x) and a.tolist() == [0, 1, 2, 3]
    m, a = density_peak_merge(torch.ones(5, 3) * 1e4, 2)  # ties: no underflow, still 2 clusters, by index
    assert m.shape == (2, 3) and a.tolist()[0] == 0
    assert density_peak_merge(torch.zeros(0, 3), 2)[0].shape == (0, 3)
    for bad in (lambda: density_peak_merge(x, 0), lambda: density_peak_merge(torch.full((2, 2), float("nan")), 1),
                lambda: density_peak_merge(torch.ones(3), 1)):
        with pytest.raises(ValueError):
            bad()
