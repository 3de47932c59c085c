"""Question-aware selection: text relevance, ResPrune and SPARE-style weights (docs/design.md §3.3)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .greedy import ZERO_TOL, check_k, check_matrix, check_weights, greedy_residual, select_subspace

RESPRUNE_ALPHA = {"qwen": 0.3, "llava": 0.75}  # published g(r) = r^alpha exponents per model family
MODES = ("resprune", "spare", "relevance", "none")


def default_alpha(family: str) -> float:
    """ResPrune alpha for a model family name ('qwen*' -> 0.3, 'llava*' -> 0.75, else 0.3)."""
    f = family.lower()
    return RESPRUNE_ALPHA["llava"] if "llava" in f else RESPRUNE_ALPHA["qwen"]


def text_relevance(tokens: Tensor, text_embeds: Tensor, eps: float = 1e-2) -> Tensor:
    """(n,) float32: max cosine similarity of each token to any text embedding (m, d), clipped to [eps, 1]."""
    X = check_matrix(tokens, "tokens")
    T = check_matrix(text_embeds, "text_embeds").to(X.device)
    if T.shape[0] == 0:
        raise ValueError("text_embeds is empty: no question words to score against")
    if T.shape[1] != X.shape[1]:
        raise ValueError(f"text_embeds dimension {T.shape[1]} != token dimension {X.shape[1]}")
    if not 0 < eps <= 1:
        raise ValueError(f"eps must be in (0, 1], got {eps}")
    nx = torch.nn.functional.normalize(X, dim=1)
    nt = torch.nn.functional.normalize(T, dim=1)
    return (nx @ nt.T).max(dim=1).values.clamp(eps, 1.0)  # (n,)


def check_relevance(relevance, n: int, device) -> Tensor:
    """(n,) relevance in [0, 1] (1e-6 slack), float32 on device; ValueError otherwise."""
    r = check_weights(relevance, n, device)
    if (r > 1 + 1e-6).any():
        raise ValueError("relevance must lie in [0, 1]")
    return r.clamp(0.0, 1.0)


def question_select(tokens: Tensor, k: int, relevance: Tensor | None = None, *, mode: str = "resprune",
                    alpha: float = 0.3, beta: float = 1.0, spare_frac: float = 0.25) -> Tensor:
    """Pick min(k, n) token indices (pick order) for a question; relevance (n,) in [0, 1] or None.

    relevance None or mode "none": question-agnostic greedy subspace selection.
    "resprune": greedy residual selection with residual energy x g(r) = r^alpha (weights r^alpha).
    "spare": on the raw features, k - round(spare_frac * k) picks with weights r^alpha, then the remaining
      round(spare_frac * k) picks continue against the same basis with anti-relevance weights
      max(1 - r, 1e-3)^beta (context tokens the question does not name). spare_frac=0 equals resprune.
    "relevance": top-k relevance, no subspace step (the ablation that collapses in ResPrune's paper).
    """
    X = check_matrix(tokens, "tokens")
    n = X.shape[0]
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not (math.isfinite(alpha) and alpha >= 0 and math.isfinite(beta) and beta >= 0 and 0 <= spare_frac <= 1):
        raise ValueError("need alpha >= 0, beta >= 0 and 0 <= spare_frac <= 1")
    k = min(check_k(k), n)
    if relevance is None or mode == "none":
        return select_subspace(X, k)
    r = check_relevance(relevance, n, X.device)
    if mode == "relevance":
        return torch.sort(-r, stable=True).indices[:k]
    w = r.pow(alpha)
    k_anti = round(spare_frac * k) if mode == "spare" else 0
    first = select_subspace(X, k - k_anti, w)
    if k_anti == 0:
        return first
    return torch.cat([first, spare_second(X, r, first, k_anti, beta)])


def spare_second(X: Tensor, r: Tensor, first: Tensor, k_anti: int, beta: float) -> Tensor:
    """SPARE's second phase: k_anti picks among the rows of X (n, d) not in `first`, greedy against span(X[first])
    with anti-relevance weights max(1 - r, 1e-3)^beta until the residual energy is zero, then a fresh greedy
    round on the rest. Returns (k_anti,) row ids (fewer only when fewer rows are left)."""
    n = X.shape[0]
    rest = torch.ones(n, dtype=torch.bool, device=X.device)
    rest[first] = False
    rest = rest.nonzero().reshape(-1)
    w2 = (1.0 - r[rest]).clamp_min(1e-3).pow(beta)  # (m,)
    A2 = X[rest] * w2.sqrt()[:, None]
    Q = torch.linalg.qr(X[first].T).Q if first.numel() else None  # (d, k1)
    R = A2 - (A2 @ Q) @ Q.T if Q is not None else A2.clone()
    if Q is not None:
        R -= (R @ Q) @ Q.T
    zero = ZERO_TOL * float(A2.pow(2).sum(1).max()) if rest.numel() else 0.0
    picks, _, _ = greedy_residual(R, k_anti, Q, zero_energy=zero)
    second = rest[picks]
    if second.numel() < k_anti:  # rank exhausted: fill by a fresh greedy round on the rest
        left = torch.ones(rest.numel(), dtype=torch.bool, device=X.device)
        left[picks] = False
        more = rest[left][select_subspace(X[rest[left]], k_anti - second.numel(), w2[left])]
        second = torch.cat([second, more])
    return second
