"""SparseVLM-style visual-token pruning inside the language model (docs/design.md §5).

Raters: text tokens whose mean attention from the visual tokens (on the input embeddings) is above
average. Before each pruning layer K, the visual tokens are scored by the attention probabilities of the
rater rows in layer K-1 (averaged over heads and raters, normalised over all causal keys) and only the
best are passed on: layers >= K see a shorter sequence and keep shorter KV caches.

The scores are computed on the side by an attention function registered with
`transformers.AttentionInterface` (rater rows only, never the full attention matrix) that then delegates
to the stock kernel; the tokens are dropped by forward pre-hooks on the decoder layers, which slice the
hidden states, the (cos, sin) position embeddings, the position ids and the 4D mask. Works for any
decoder whose layers are called as ``layer(hidden_states, attention_mask=..., position_embeddings=...,
cache=...)`` (transformers 5.24; ``past_key_values=...`` in 5.23) — Qwen2/2.5/3-VL, LLaVA families,
plain Qwen2/Llama.

    with decoder_prune(model, DecoderPruneConfig(layers=(2,), keep=(0.5,)), visual_mask) as stats:
        out = model.generate(**inputs)
    stats.kept  # {2: [kept visual tokens per sample]}
"""

from __future__ import annotations

import math
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Iterator

import torch
from torch import Tensor, nn

__all__ = ["DecoderPruneConfig", "PruneStats", "decoder_prune", "validate_config", "rater_tokens", "language_model"]

_PREFIX = "streamprune_side_"


@dataclass
class DecoderPruneConfig:
    """Where and how much to prune inside the decoder.

    layers: prune visual tokens before these decoder layers (scores come from layer K-1), strictly increasing.
    keep: per-layer budget, a float in (0, 1] (fraction of the current visual tokens) or an int >= 1 (count);
        one value applies to every layer.
    rank_adaptive: drop N = floor(lam * (L_v - rank(P))) tokens instead (P: rater-to-visual probabilities).
    recycle: merge the top `recycle_frac` of the dropped tokens (by score) into `recycle_clusters` tokens
        (float: fraction of the recycled tokens, int: count) by density-peak clustering; the merged tokens
        go to the end of the visual span with the position of their best-scored member.
    """

    layers: tuple[int, ...] = (2,)
    keep: tuple[float | int, ...] = (0.5,)
    rank_adaptive: bool = False
    lam: float = 0.5
    recycle: bool = False
    recycle_frac: float = 0.3
    recycle_clusters: float | int = 0.25
    k_neighbors: int = 5


@dataclass
class PruneStats:
    """What the last prefill did (lists hold one entry per sample)."""

    layers: tuple[int, ...] = ()
    visual_in: list[int] = field(default_factory=list)          # visual tokens in the prompt
    raters: list[Tensor] = field(default_factory=list)          # original indices of the rater tokens
    kept: dict[int, list[int]] = field(default_factory=dict)    # visual tokens after layer K's pruning (incl. merged)
    keep_index: dict[int, list[Tensor]] = field(default_factory=dict)  # original indices of kept (unmerged) visual tokens
    recycled: dict[int, list[int]] = field(default_factory=dict)       # merged tokens added at layer K
    scores: dict[int, list[Tensor]] = field(default_factory=dict)      # (n_vis,) float32 score of each visual token seen
    scored_index: dict[int, list[Tensor]] = field(default_factory=dict)  # its original (position-source) index
    prefills: int = 0

    def new_prefill(self) -> None:
        """Clear the per-prefill fields in place (the caller's reference stays current) and count it."""
        for f in fields(self):
            if f.name not in ("layers", "prefills"):
                setattr(self, f.name, f.default_factory())
        self.prefills += 1


def language_model(model: nn.Module) -> nn.Module:
    """The decoder stack (a module with `.layers` and `.config`) inside a VLM or causal LM."""
    for path in ("model.language_model", "language_model", "model", ""):
        m = model
        for name in filter(None, path.split(".")):
            m = getattr(m, name, None)
            if m is None:
                break
        layers = getattr(m, "layers", None) if m is not None else None
        if isinstance(layers, nn.ModuleList) and len(layers) and hasattr(layers[0], "self_attn"):
            return m
    raise ValueError(f"cannot find the decoder layers of {type(model).__name__} (looked for model.language_model.layers)")


def _deepstack_layers(model: nn.Module) -> int:
    vc = getattr(getattr(model, "config", None), "vision_config", None)
    return len(getattr(vc, "deepstack_visual_indexes", None) or ())


def validate_config(config: DecoderPruneConfig, num_layers: int, deepstack: int = 0) -> tuple[float | int, ...]:
    """Check a config against a decoder; returns the per-layer keep tuple. Raises ValueError."""
    layers = tuple(config.layers)
    if not layers:
        raise ValueError("decoder_prune: layers must name at least one decoder layer")
    for k in layers:
        if isinstance(k, bool) or not isinstance(k, int):
            raise ValueError(f"decoder_prune: layer {k!r} is not an int")
        if not 1 <= k < num_layers:
            raise ValueError(f"decoder_prune: layer {k} out of range 1..{num_layers - 1} (scores come from layer K-1)")
    if any(b <= a for a, b in zip(layers, layers[1:])):
        raise ValueError(f"decoder_prune: layers must be strictly increasing, got {layers}")
    if deepstack and layers[0] < deepstack:
        raise ValueError(f"decoder_prune: layer {layers[0]} is not after the last deepstack layer ({deepstack - 1})")
    keep = tuple(config.keep)
    if len(keep) == 1:
        keep = keep * len(layers)
    if len(keep) != len(layers):
        raise ValueError(f"decoder_prune: {len(keep)} keep values for {len(layers)} layers")
    if not config.rank_adaptive:
        for v in keep:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"decoder_prune: keep {v!r} is not a number")
            if isinstance(v, float) and not 0.0 < v <= 1.0:
                raise ValueError(f"decoder_prune: keep fraction {v} must be in (0, 1]")
            if isinstance(v, int) and v < 1:
                raise ValueError(f"decoder_prune: keep count {v} must be >= 1")
    if not 0.0 < float(config.lam) <= 1.0:
        raise ValueError(f"decoder_prune: lam {config.lam} must be in (0, 1]")
    if config.recycle:
        if not 0.0 < float(config.recycle_frac) <= 1.0:
            raise ValueError(f"decoder_prune: recycle_frac {config.recycle_frac} must be in (0, 1]")
        c = config.recycle_clusters
        if isinstance(c, bool) or not isinstance(c, (int, float)) or c <= 0 or (isinstance(c, float) and c > 1):
            raise ValueError(f"decoder_prune: recycle_clusters {c!r} must be a fraction in (0, 1] or a count >= 1")
    return keep


def rater_tokens(embeds: Tensor, visual: Tensor, text: Tensor) -> Tensor:
    """Rater slots of one sample: r_j = mean_v softmax_j(V T^T); raters = text tokens with r_j > mean(r).

    embeds (n, d); visual, text (n,) bool. Returns ascending indices (all text tokens when r is flat)."""
    t_idx = text.nonzero().squeeze(1)  # (n_t,)
    if t_idx.numel() == 0 or not bool(visual.any()):
        return t_idx
    t = embeds[t_idx].float()  # (n_t, d)
    v_idx = visual.nonzero().squeeze(1)
    # float32 logits in row chunks: no float copy of all visual embeddings
    logits = torch.cat([embeds[v_idx[i:i + 1024]].float() @ t.T for i in range(0, v_idx.numel(), 1024)])  # (n_v, n_t)
    r = torch.softmax(logits, dim=-1).mean(0)  # (n_t,)
    sel = r > r.mean()
    return t_idx[sel] if bool(sel.any()) else t_idx


@dataclass
class _Region:
    """Token slots seen by the layers of one region (between two pruning layers), per sample."""

    src: Tensor     # (B, n) original index giving position embeddings / position ids
    msrc: Tensor    # (B, n) original index giving mask rows and columns
    vis: Tensor     # (B, n) bool visual slot
    rater: Tensor   # (B, n) bool rater slot
    merged: Tensor  # (B, n) bool recycled (merged) slot


class _State:
    def __init__(self, config, keep, visual_mask):
        self.config, self.keep = config, keep
        self.visual_mask = visual_mask
        self.layers = tuple(config.layers)
        self.score_layers = {k - 1: k for k in self.layers}
        self.stats = PruneStats(layers=self.layers)
        self.regions: list[_Region] = []
        self.pending: dict[int, tuple[list[Tensor], list[int | None]]] = {}
        self.prefill = False
        self.n_prompt = 0
        self._cache: dict = {}

    def _cached(self, obj, r: int, make):
        """The sliced version of a per-forward input (same object for every layer of a region)."""
        if obj is None:
            return None
        key = (id(obj), r)
        hit = self._cache.get(key)
        if hit is None or hit[0] is not obj:
            hit = self._cache[key] = (obj, make())
        return hit[1]

    def region_of(self, layer: int) -> int:
        return sum(1 for k in self.layers if k <= layer)

    # ---- layer 0: phase detection and raters
    def start(self, h: Tensor, mask, pkv) -> None:
        from transformers.cache_utils import DynamicCache

        if pkv is not None and not isinstance(pkv, DynamicCache):
            raise ValueError(f"decoder_prune needs a DynamicCache, got {type(pkv).__name__}")
        self.prefill = pkv is None or pkv.get_seq_length() == 0
        self._cache = {}
        if not self.prefill:
            if not self.regions:
                raise ValueError("decoder_prune: a cached step arrived without a pruned prefill in this context")
            return
        B, L = h.shape[:2]
        vm = self.visual_mask.to(h.device)
        if vm.shape[0] != B or vm.shape[1] > L:
            raise ValueError(f"decoder_prune: visual_mask {tuple(vm.shape)} does not fit hidden states {(B, L)}")
        if vm.shape[1] < L:  # no-cache generation appends tokens after the prompt
            vm = torch.cat([vm, vm.new_zeros(B, L - vm.shape[1])], dim=1)
        valid = _valid_keys(mask, B, L, h.device)  # (B, L)
        text = valid & ~vm
        rater = torch.zeros_like(vm)
        st = self.stats
        st.new_prefill()
        for b in range(B):
            r = rater_tokens(h[b], vm[b], text[b])
            rater[b, r] = True
            st.raters.append(r.cpu())
            st.visual_in.append(int(vm[b].sum()))
        idx = torch.arange(L, device=h.device).expand(B, L)
        self.regions = [_Region(idx, idx, vm, rater, torch.zeros_like(vm))]
        self.pending = {}
        self.n_prompt = L

    # ---- side scores inside the attention function of layer K-1
    def score(self, module, query: Tensor, key: Tensor, mask, scaling) -> None:
        layer = self.score_layers[module.layer_idx]
        reg = self.regions[-1]
        B, H, n, D = query.shape
        if n != reg.src.shape[1] or key.shape[2] != n:
            raise ValueError(f"decoder_prune: layer {module.layer_idx} saw {n} queries for {reg.src.shape[1]} slots")
        scale = D**-0.5 if scaling is None else scaling
        rep = H // key.shape[1]
        scores, drops = [], []
        for b in range(B):
            rows = reg.rater[b].nonzero().squeeze(1)  # (R,)
            cols = reg.vis[b].nonzero().squeeze(1)  # (n_v,)
            P = _rater_probs(query[b], key[b], rows, cols, rep, scale, None if mask is None else mask[b if mask.shape[0] > 1 else 0])
            scores.append(P.mean(0) if rows.numel() else P.new_zeros(cols.numel()))  # (n_v,)
            if self.config.rank_adaptive:
                rank = int(torch.linalg.matrix_rank(P)) if rows.numel() else 0
                drops.append(int(math.floor(self.config.lam * (cols.numel() - rank))))
            else:
                drops.append(None)
        self.pending[layer] = (scores, drops)

    # ---- pre-hook of a pruning layer: choose, recycle, rebuild the slot table
    def prune(self, layer: int, h: Tensor) -> Tensor:
        if layer not in self.pending:
            raise ValueError(f"decoder_prune: no scores for layer {layer} (attention of layer {layer - 1} did not run)")
        scores, drops = self.pending.pop(layer)
        reg = self.regions[-1]
        B = h.shape[0]
        n_vis = [int(reg.vis[b].sum()) for b in range(B)]
        if self.config.rank_adaptive:  # one length per batch: the largest keep count
            n_keep = [max(max(1, n - d) for n, d in zip(n_vis, drops))] * B
            n_keep = [min(k, n) for k, n in zip(n_keep, n_vis)]
        else:
            kv = self.keep[self.layers.index(layer)]
            n_keep = [min(n, kv) if isinstance(kv, int) else min(n, max(1, round(kv * n))) for n in n_vis]
        rows, st = [], self.stats
        for key in ("kept", "keep_index", "recycled", "scores", "scored_index"):
            getattr(st, key)[layer] = []
        for b in range(B):
            rows.append(self._prune_one(layer, h[b], reg, b, scores[b], n_keep[b]))
        lens = {r[0].numel() for r in rows}
        if len(lens) != 1:
            raise ValueError("decoder_prune: samples in a batch must keep the same number of tokens "
                             "(give every sample the same number of visual tokens)")
        if all(k == n for k, n in zip(n_keep, n_vis)):  # nothing dropped (so nothing recycled): no copy
            h_new = h
        else:
            h_new = torch.stack([r[1] for r in rows])  # (B, n', d)
        self.regions.append(_Region(*(torch.stack([r[i] for r in rows]) for i in (0, 2, 3, 4, 5))))
        return h_new

    def _prune_one(self, layer, h: Tensor, reg: _Region, b: int, score: Tensor, n_keep: int):
        st = self.stats
        vis = reg.vis[b].nonzero().squeeze(1)  # (n_v,)
        order = torch.sort(-score, stable=True).indices  # best first, ties by position
        keep_v, drop_v = vis[order[:n_keep]], vis[order[n_keep:]]
        n = reg.vis.shape[1]
        keep = torch.ones(n, dtype=torch.bool, device=h.device)
        keep[drop_v] = False
        slots = keep.nonzero().squeeze(1)  # (n_kept,) ascending
        h_new = h if drop_v.numel() == 0 else h[slots]  # (n_kept, d)
        src, msrc = reg.src[b, slots], reg.msrc[b, slots]
        vis_new, rater_new, merged_new = reg.vis[b, slots], reg.rater[b, slots], reg.merged[b, slots]
        n_rec = 0
        if self.config.recycle and drop_v.numel():
            from streamprune.select.recycle import density_peak_merge

            d_order = order[n_keep:]  # dropped, best first
            take = max(1, math.ceil(self.config.recycle_frac * d_order.numel()))
            rec = vis[d_order[:take]]  # (m,) slots, best first
            c = self.config.recycle_clusters
            c = min(rec.numel(), c if isinstance(c, int) else max(1, round(c * rec.numel())))
            merged, assign = density_peak_merge(h[rec].float(), c, k_neighbors=self.config.k_neighbors)  # (c, d), (m,)
            # position source: the best-scored member of each cluster (members are ordered best first)
            first = torch.full((merged.shape[0],), rec.numel(), dtype=torch.long, device=h.device)
            first = first.scatter_reduce(0, assign, torch.arange(rec.numel(), device=h.device), reduce="amin")
            rep = rec[first]  # (c,) slots
            last_vis = vis.max()
            at = int((slots <= last_vis).sum())  # insert after the last visual slot of this region
            n_rec = merged.shape[0]
            ins = lambda a, x: torch.cat([a[:at], x, a[at:]])  # noqa: E731
            h_new = ins(h_new, merged.to(h.dtype))
            src = ins(src, reg.src[b, rep])
            msrc = ins(msrc, reg.msrc[b, last_vis].expand(n_rec))
            ones = torch.ones(n_rec, dtype=torch.bool, device=h.device)
            vis_new, rater_new, merged_new = ins(vis_new, ones), ins(rater_new, ~ones), ins(merged_new, ones)
        st.kept[layer].append(int(vis_new.sum()))
        st.keep_index[layer].append(torch.sort(reg.src[b, keep_v][~reg.merged[b, keep_v]]).values.cpu())
        st.recycled[layer].append(n_rec)
        st.scores[layer].append(score.detach().float().cpu())
        st.scored_index[layer].append(reg.src[b, vis].cpu())
        return src, h_new, msrc, vis_new, rater_new, merged_new

    # ---- pre-hook of every layer >= first pruning layer
    def slice_inputs(self, layer: int, args: tuple, kwargs: dict):
        h = args[0] if args else kwargs["hidden_states"]
        r = self.region_of(layer)
        if self.prefill:
            if layer in self.layers:
                if h.shape[1] != self.regions[r - 1].src.shape[1]:
                    raise ValueError(f"decoder_prune: layer {layer} got {h.shape[1]} tokens, expected {self.regions[r - 1].src.shape[1]}")
                h = self.prune(layer, h)
            reg = self.regions[r]
            pe = kwargs.get("position_embeddings")
            if pe is not None:
                kwargs["position_embeddings"] = self._cached(pe, r, lambda: tuple(_take_seq(t, reg.src, self.n_prompt, dim=-2) for t in pe))
            pid = kwargs.get("position_ids")
            if torch.is_tensor(pid):
                kwargs["position_ids"] = self._cached(pid, r, lambda: _take_seq(pid, reg.src, self.n_prompt, dim=-1))
            m = kwargs.get("attention_mask")
            kwargs["attention_mask"] = self._cached(m, r, lambda: _slice_mask_prefill(m, reg.msrc))
        else:
            reg = self.regions[r]
            m = kwargs.get("attention_mask")
            kwargs["attention_mask"] = self._cached(m, r, lambda: _slice_mask_decode(m, reg.msrc, self.n_prompt))
        if args:
            args = (h,) + tuple(args[1:])
        else:
            kwargs["hidden_states"] = h
        return args, kwargs


# transformers 5.24 passes a decoder layer's KV cache as `cache`; 5.23 as `past_key_values`
CACHE_KWARGS = ("cache", "past_key_values")


def layer_cache(kwargs: dict):
    """The KV cache a decoder layer was called with, under whichever name the installed transformers uses
    (None when there is none: a prefill without cache or a no-cache forward)."""
    for name in CACHE_KWARGS:
        if kwargs.get(name) is not None:
            return kwargs[name]
    return None


def _valid_keys(mask, B: int, L: int, device) -> Tensor:
    """(B, L) bool: keys that are not padding, read from the layer's mask (last query row sees all valid keys)."""
    if mask is None or isinstance(mask, dict):
        return torch.ones(B, L, dtype=torch.bool, device=device)
    if mask.ndim == 2:
        return mask[:, -L:].bool().expand(B, L)
    row = mask[:, 0, -1, -L:]
    ok = row if row.dtype == torch.bool else row == 0
    return ok.expand(B, L)


def _rater_probs(q: Tensor, k: Tensor, rows: Tensor, cols: Tensor, rep: int, scale: float, mask) -> Tensor:
    """Head-averaged softmax(q[rows] k^T * scale) restricted to `cols`: (R, n_v) float32, one head at a time."""
    H, n = q.shape[0], k.shape[1]
    P = torch.zeros(rows.numel(), cols.numel(), dtype=torch.float32, device=q.device)  # (R, n_v)
    if rows.numel() == 0:
        return P
    if mask is None or mask.ndim == 1:  # no mask, or a flash-style padding mask: add causality
        allowed = torch.arange(n, device=q.device)[None, :] <= rows[:, None]  # (R, n)
        if mask is not None:
            allowed = allowed & mask[None, -n:].bool()
    for hd in range(H):
        logits = (q[hd, rows].float() @ k[hd // rep].float().T) * scale  # (R, n)
        if mask is None or mask.ndim == 1:
            logits = logits.masked_fill(~allowed, float("-inf"))
        else:
            m = mask[min(hd, mask.shape[0] - 1), rows]  # (R, n)
            logits = logits.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else logits + m.float()
        P += torch.softmax(logits, dim=-1)[:, cols]
    return P / H


def _take_seq(t: Tensor, idx: Tensor, n_prompt: int, dim: int = -2) -> Tensor:
    """Gather slots idx (B, n) along sequence dim `dim` of t; the batch dim is the one before it (size B or 1).

    Covers (B, L, D) cos/sin, (C, B, L, D), (B, L) and (C, B, L) position ids. Tensors of another length pass."""
    sd = dim % t.ndim
    if t.shape[sd] != n_prompt or sd == 0:
        return t
    bd = sd - 1
    B, n = idx.shape
    shape = list(t.shape)
    shape[bd] = B
    t = t.expand(shape)
    view = [1] * t.ndim
    view[bd], view[sd] = B, n
    shape[sd] = n
    return torch.gather(t, sd, idx.view(view).expand(shape))


def _slice_mask_prefill(mask, msrc: Tensor):
    if mask is None or isinstance(mask, dict):
        return mask
    B, n = msrc.shape
    if mask.ndim == 2:  # flash-style (B, L) padding mask
        return torch.gather(mask.expand(B, -1), 1, msrc)
    m = mask.expand(B, *mask.shape[1:])
    m = torch.gather(m, 2, msrc[:, None, :, None].expand(-1, m.shape[1], -1, m.shape[3]))
    m = torch.gather(m, 3, msrc[:, None, None, :].expand(-1, m.shape[1], n, -1))  # (B, h, n, n)
    tril = torch.ones(n, n, dtype=torch.bool, device=m.device).tril()
    if m.dtype == torch.bool:
        return m & tril
    return m.masked_fill(~tril, torch.finfo(m.dtype).min)


def _slice_mask_decode(mask, msrc: Tensor, n_prompt: int):
    if mask is None or isinstance(mask, dict):
        return mask
    B = msrc.shape[0]
    lk = mask.shape[-1]
    cols = torch.cat([msrc, torch.arange(n_prompt, lk, device=msrc.device).expand(B, -1)], dim=1)  # (B, n + t)
    if mask.ndim == 2:
        return torch.gather(mask.expand(B, -1), 1, cols)
    m = mask.expand(B, *mask.shape[1:])
    return torch.gather(m, 3, cols[:, None, None, :].expand(-1, m.shape[1], m.shape[2], -1))


# ---- attention / mask interface registration

def _side_attention(base: str):
    def forward(module, query, key, value, attention_mask, *args, **kwargs):
        st = getattr(module, "_streamprune_state", None)
        if st is not None and st.prefill and module.layer_idx in st.score_layers:
            scaling = kwargs.get("scaling", args[0] if args else None)
            st.score(module, query, key, attention_mask, scaling)
        return _base_attention(base, module)(module, query, key, value, attention_mask, *args, **kwargs)

    forward.__name__ = f"{_PREFIX}{base}"
    return forward


def _base_attention(base: str, module):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if base == "eager":
        return sys.modules[type(module).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS[base]


def _register(base: str) -> str:
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    name = f"{_PREFIX}{base}"
    if name not in ALL_ATTENTION_FUNCTIONS:
        if base != "eager" and base not in ALL_ATTENTION_FUNCTIONS:
            raise ValueError(f"decoder_prune: unsupported attention implementation {base!r}")
        if base not in ALL_MASK_ATTENTION_FUNCTIONS:
            raise ValueError(f"decoder_prune: no mask function for attention implementation {base!r}")
        AttentionInterface.register(name, _side_attention(base))
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])
    return name


@contextmanager
def decoder_prune(model: nn.Module, config: DecoderPruneConfig, visual_mask: Tensor) -> Iterator[PruneStats]:
    """Prune visual tokens inside the decoder of `model` for every forward / generate in the block.

    visual_mask: (B, L) bool over the prompt's input_ids (True = visual token). Yields a PruneStats that
    is refreshed at every prefill. The vision tower and the other sub-configs are untouched; the original
    attention implementation and all hooks are restored on exit."""
    if not isinstance(visual_mask, Tensor) or visual_mask.ndim != 2 or visual_mask.dtype != torch.bool:
        raise ValueError("decoder_prune: visual_mask must be a (B, L) bool tensor")
    lm = language_model(model)
    layers = lm.layers
    keep = validate_config(config, len(layers), _deepstack_layers(model))
    if getattr(lm, "_streamprune_active", False):
        raise ValueError("decoder_prune: already active on this model")
    cfg = lm.config
    base = cfg._attn_implementation or "eager"
    if base.startswith(_PREFIX):
        raise ValueError("decoder_prune: already active on this model")
    name = _register(base)
    state = _State(config, keep, visual_mask)
    handles = []

    def hook0(mod, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        state.start(h, kwargs.get("attention_mask"), layer_cache(kwargs))

    def hook_k(i):
        def hook(mod, args, kwargs):
            return state.slice_inputs(i, args, kwargs)
        return hook

    try:
        lm._streamprune_active = True
        cfg._attn_implementation = name
        for i in sorted(state.score_layers):
            layers[i].self_attn._streamprune_state = state
        handles.append(layers[0].register_forward_pre_hook(hook0, with_kwargs=True))
        for i in range(config.layers[0], len(layers)):
            handles.append(layers[i].register_forward_pre_hook(hook_k(i), with_kwargs=True))
        yield state.stats
    finally:
        for hd in handles:
            hd.remove()
        state._cache.clear()
        state.pending.clear()
        for i in state.score_layers:
            layers[i].self_attn.__dict__.pop("_streamprune_state", None)
        cfg._attn_implementation = base
        lm.__dict__.pop("_streamprune_active", None)
