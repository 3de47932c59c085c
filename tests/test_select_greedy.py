"""select_subspace: scipy pivoted-QR oracle, rank deficiency, tie rules, dtypes, bad input."""

import numpy as np
import pytest
import scipy.linalg
import torch

from streamprune.select import select_subspace


def _scipy_order(X, w=None):
    A = X.double().numpy().T
    if w is not None:
        A = A * np.sqrt(w.double().numpy())[None]
    return scipy.linalg.qr(A, pivoting=True, mode="r")[1]


@pytest.mark.parametrize("seed", range(40))
def test_matches_scipy_pivoted_qr(seed):
    g = torch.Generator().manual_seed(seed)
    n, d = (int(v) for v in torch.randint(2, 50, (2,), generator=g))
    k = int(torch.randint(1, n + 1, (1,), generator=g))
    X = torch.randn(n, d, generator=g)
    w = torch.rand(n, generator=g) + 0.05 if seed % 2 else None
    got = select_subspace(X, k, w)
    assert got.dtype == torch.long and got.numel() == k == len(set(got.tolist()))
    m = min(k, d)
    assert got[:m].tolist() == _scipy_order(X, w)[:m].tolist()


@pytest.mark.parametrize("seed", range(20))
def test_rank_deficient_and_k_above_rank(seed):
    g = torch.Generator().manual_seed(100 + seed)
    n, d = (int(v) for v in torch.randint(6, 40, (2,), generator=g))
    r = int(torch.randint(1, min(n, d) - 1, (1,), generator=g))
    X = torch.randn(n, r, generator=g) @ torch.randn(r, d, generator=g)
    got = select_subspace(X, n + 5)
    assert sorted(got.tolist()) == list(range(n))  # k > n -> all n rows, distinct
    assert got[:r].tolist() == _scipy_order(X)[:r].tolist()
    # the first r picks span X: the residual of X against them is ~0
    Q = torch.linalg.qr(X[got[:r]].T.double()).Q
    assert (X.double() - X.double() @ Q @ Q.T).norm() < 1e-4 * X.norm()


def test_zero_residual_tie_rule_starts_a_new_round():
    # 3 copies each of 2 orthogonal directions: rounds pick one of each direction, then the next copies
    e = torch.eye(4)[:2]
    X = torch.cat([e, e, e]) * torch.tensor([[3.0], [2.0], [3.0], [2.0], [3.0], [2.0]])
    assert select_subspace(X, 6).tolist() == [0, 1, 2, 3, 4, 5]
    X[2] = 0  # zero rows come last in index order
    assert select_subspace(X, 6).tolist() == [0, 1, 4, 3, 5, 2]  # round 2: largest first


def test_zero_weight_rows_last_and_weights_change_order():
    X = torch.eye(3) * torch.tensor([[3.0], [2.0], [1.0]])
    assert select_subspace(X, 3).tolist() == [0, 1, 2]
    assert select_subspace(X, 3, torch.tensor([0.0, 1.0, 100.0])).tolist() == [2, 1, 0]


def test_low_precision_input_is_selected_in_float32():
    X = torch.randn(64, 32, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    assert torch.equal(select_subspace(X, 16), select_subspace(X.float(), 16))


def test_edge_sizes():
    assert select_subspace(torch.zeros(0, 5), 3).numel() == 0
    assert select_subspace(torch.randn(4, 5), 0).numel() == 0
    assert select_subspace(torch.zeros(3, 5), 2).tolist() == [0, 1]


@pytest.mark.parametrize("bad", [
    lambda: select_subspace(torch.tensor([[1.0, float("nan")]]), 1),
    lambda: select_subspace(torch.tensor([[1.0, float("inf")]]), 1),
    lambda: select_subspace(torch.randn(5), 1),
    lambda: select_subspace(torch.randn(5, 3), -1),
    lambda: select_subspace(torch.randn(5, 3), 2, torch.ones(4)),
    lambda: select_subspace(torch.randn(5, 3), 2, -torch.ones(5)),
    lambda: select_subspace([[1.0, 2.0]], 1),
])
def test_bad_input_raises_value_error(bad):
    with pytest.raises(ValueError):
        bad()


def test_k_must_be_an_integer_not_a_bool():
    with pytest.raises(ValueError):
        select_subspace(torch.randn(5, 3), True)
