"""Qwen2-VL / Qwen2.5-VL / Qwen3-VL adapter (one family).

Frames are encoded one temporal patch (2 frames) at a time: vision attention never crosses temporal
patches, so this is bit-identical to encoding the whole clip. Each token's payload row holds what the
prompt builder needs: (frame interval, frames in block, row i, column j, grid rows, grid cols) of the
merged grid, and for Qwen3-VL the token's deepstack features (so pruning slices them alike).

Positions (3D M-RoPE, `position_ids` (3, 1, L)): a kept token keeps its full-prompt position
(start + t_pos, start + i, start + j). The text after the video:
- `positions="original"` (default): max(video position) + 1 = start + max(t_max + 1, H, W), the original
  Qwen code path (transformers 4.x `get_rope_index`, which qwen-vl-utils feeds and the models were
  trained and evaluated with);
- `positions="hf"`: start + max(H, W), transformers 5.x, which ignores the temporal axis, so on a video
  with more temporal positions than max(H, W) the question's positions overlap the video's.
The two agree whenever t_max + 1 <= max(H, W) (short clips); vLLM's EVS pruning code uses start + W, which
is neither. transformers 5.x has had Qwen2.5-VL RoPE-index bugs (huggingface/transformers#45381; #48669,
fractional `second_per_grid_ts` truncated to int), so it is no authority on positions: the default follows
the original code, and tests pin both conventions.
Qwen2.5-VL's temporal axis is floor(t * second_per_grid_t * tokens_per_second), in float32 as the original
code computes it (second_per_grid_t = 2 frames / fps, fractional at 3 or 4 fps). Qwen3-VL interleaves
"<t seconds>" text with one vision group per temporal patch (t = 0 in each group; both conventions agree).

Frame size: Qwen2/2.5-VL bound each frame's area; Qwen3-VL bounds t*h*w of the whole clip (its stock video
processor), so the adapter needs the clip's length (`clip_frames`, set by `pipeline.run_video` from the
reader's plan); a live stream, whose length is unknown, is sized like a LIVE_CLIP_FRAMES-frame clip.
"""

from __future__ import annotations


import numpy as np
import torch

from ..resize import clip_resize, resize_frames, smart_resize
from .base import CLIP_MEAN, CLIP_STD, HALF, Adapter, EncodedBlock, keep_index


# Qwen3-VL sizes frames by the length of the clip (stock: pixel bounds on t*h*w). A live stream has no known
# length: it is sized like a clip of this many frames, i.e. as stock sizes a 16 s clip at its default 2 fps.
# With the released checkpoints' bounds (longest_edge 25,165,824 = 32 x 768 x 32 x 32) that is 768 merged
# tokens per frame, qwen-vl-utils' per-frame ceiling (VIDEO_MAX_TOKEN_NUM).
LIVE_CLIP_FRAMES = 32

# payload columns
P_DT, P_NF, P_I, P_J, P_GH, P_GW = range(6)
N_POS = 6


def patchify(x: torch.Tensor, patch: int, merge: int, temporal: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised frames (T, C, H, W) -> (rows (T'*H/p*W/p, C*temporal*p*p), grid_thw (1, 3)).

    T is padded to a multiple of `temporal` by repeating the last frame; rows are ordered
    (t, h/merge, w/merge, merge, merge) so every merge**2 consecutive rows form one merge block."""
    if pad := -x.shape[0] % temporal:
        x = torch.cat([x, x[-1:].expand(pad, -1, -1, -1)])
    T, C, H, W = x.shape
    gt, gh, gw = T // temporal, H // patch, W // patch
    x = x.view(gt, temporal, C, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # (gt, gh/m, gw/m, m, m, C, temporal, p, p)
    rows = x.reshape(gt * gh * gw, C * temporal * patch * patch)
    return rows, torch.tensor([[gt, gh, gw]])


class QwenVLAdapter(Adapter):
    frames_per_block = 2
    placeholder = "<|video_pad|>"
    positions = "original"
    default_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
        "{% else %}{% for c in m['content'] %}{% if c['type'] == 'video' %}<|vision_start|><|video_pad|>"
        "<|vision_end|>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

    def __init__(self, model, tokenizer, **kw):
        super().__init__(model, tokenizer, **kw)
        self.family = model.config.model_type
        if self.positions not in ("original", "hf"):
            raise ValueError(f"positions must be 'original' or 'hf' for {self.family}, got {self.positions!r}")
        vc = model.config.vision_config
        self.patch = int(vc.patch_size)
        self.merge = int(vc.spatial_merge_size)
        self.temporal = int(vc.temporal_patch_size)
        self.tokens_per_second = float(getattr(vc, "tokens_per_second", 1) or 1)
        self._read_preprocessing(self.preprocessing)
        self.vision_start_id = int(model.config.vision_start_token_id)
        self.vision_end_id = int(model.config.vision_end_token_id)

    # -- frames -> tokens
    def token_cells(self, payload):
        p = payload[:, :N_POS].float().cpu()  # positions only (Qwen3's deepstack columns stay put)
        i, j = p[:, P_I].long(), p[:, P_J].long()
        gw = int(p[0, P_GW])
        return (int(p[0, P_GH]), gw), i * gw + j

    def _read_preprocessing(self, pp: dict) -> None:
        """Pixel bounds and normalisation as the stock video processor of the family reads them from the
        checkpoint's settings `pp` (class defaults where a key is missing)."""
        size = pp.get("size") or {}
        q3 = self.family == "qwen3_vl"
        f = self.patch * self.merge
        lo = size.get("shortest_edge") or size.get("min_pixels")
        hi = size.get("longest_edge") or size.get("max_pixels")
        if not q3:  # Qwen2VLVideoProcessor: top-level min_pixels / max_pixels override size
            lo, hi = pp.get("min_pixels") or lo, pp.get("max_pixels") or hi
        self.min_pixels = int(lo or 128 * f * f)
        self.max_pixels = int(hi or 768 * f * f)
        # qwen-vl-utils' total-video bound, opt-in in the stock processors (off when unset, as there)
        self.cap_pixels_per_frame = bool(pp.get("cap_pixels_per_frame") or False)
        self.max_video_tokens = int(pp.get("max_video_tokens") or (768 if q3 else 128000))
        mean = pp.get("image_mean") or (HALF if q3 else CLIP_MEAN)
        std = pp.get("image_std") or (HALF if q3 else CLIP_STD)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def _clip_dependent(self) -> bool:
        return self.family == "qwen3_vl" or self.cap_pixels_per_frame

    def frame_size(self, height: int, width: int, n_frames: int | None = None) -> tuple[int, int]:
        """Model input size of a height x width frame in a clip of `n_frames` frames (default
        `self.clip_frames`, else the live policy, LIVE_CLIP_FRAMES), as the stock video processor sizes it.

        Qwen2/2.5-VL bound each frame's area (unless cap_pixels_per_frame); Qwen3-VL bounds t*h*w of the
        whole clip, so its frames shrink as the clip grows."""
        f = self.patch * self.merge
        if not self._clip_dependent():
            return smart_resize(height, width, factor=f, min_pixels=self.min_pixels, max_pixels=self.max_pixels)
        t = int(n_frames or self.clip_frames or LIVE_CLIP_FRAMES)
        if t < 1:
            raise ValueError(f"n_frames must be >= 1, got {t}")
        if self.family != "qwen3_vl":  # Qwen2VLVideoProcessor.resize with cap_pixels_per_frame
            total = int(self.max_video_tokens * f * f * 0.9)
            hi = max(min(self.max_pixels, total * self.temporal // t), int(self.min_pixels * 1.05))
            return smart_resize(height, width, factor=f, min_pixels=self.min_pixels, max_pixels=hi)
        hi = self.max_pixels
        if self.cap_pixels_per_frame:  # Qwen3VLVideoProcessor.resize with cap_pixels_per_frame
            per = max(min(self.max_video_tokens * f * f, self.max_pixels // t), int(self.min_pixels * 1.05))
            hi = per * t
        return clip_resize(max(t, self.temporal), height, width, temporal=self.temporal, factor=f,
                           min_pixels=self.min_pixels, max_pixels=hi)

    def max_frame_size(self, height: int, width: int) -> tuple[int, int]:
        """The largest input size frame_size can give this frame for any clip length (a safe decode cap)."""
        return self.frame_size(height, width, n_frames=self.temporal if self._clip_dependent() else None)

    def pixel_inputs(self, images) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, H, W, 3) uint8 -> (pixel_values_videos (N, C*2*p*p), video_grid_thw (1, 3)), like the HF
        video processor (bicubic antialiased resize rounded like uint8, rescale + normalise, patchify)."""
        images = torch.as_tensor(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
        if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] < 1:
            raise ValueError(f"expected images of shape (T, H, W, 3), got {tuple(images.shape)}")
        h, w = self.frame_size(int(images.shape[1]), int(images.shape[2]))
        x = resize_frames(images, (h, w))  # (T, 3, h, w) in [0, 255]
        x = (x - 255.0 * self.mean) / (255.0 * self.std)  # rescale + normalise fused, like the processors
        return patchify(x, self.patch, self.merge, self.temporal)

    @torch.no_grad()
    def video_features(self, pixel_values_videos, video_grid_thw):
        """(tokens (n, d), deepstack list of (n, d) or []) for pixel inputs, on the model device."""
        out = self.model.model.get_video_features(pixel_values_videos.to(self.device, self.dtype),
                                                  video_grid_thw.to(self.device), return_dict=True)
        tokens = torch.cat(out.pooler_output, dim=0)  # (n, d)
        deep = [torch.cat(f, dim=0) for f in (getattr(out, "deepstack_features", None) or [])]
        return tokens, deep

    def encode(self, images, times) -> EncodedBlock:
        """One temporal patch (T == 2 frames; T == 1 at a stream's end is padded like the processors)."""
        n_frames = int(images.shape[0]) if hasattr(images, "shape") else -1
        if n_frames not in (1, self.frames_per_block):
            raise ValueError(f"{self.family}: encode takes {self.frames_per_block} frames (or 1 at the end), got {n_frames}")
        return self._encode(images, times)[0]

    def encode_blocks(self, images, times) -> list[EncodedBlock]:
        """Many temporal patches in one vision pass (attention never crosses patches, so this equals
        encoding them one by one up to float round-off)."""
        n = int(images.shape[0]) if hasattr(images, "shape") else -1
        if n < 1 or n % self.frames_per_block:
            raise ValueError(f"encode_blocks needs a positive multiple of {self.frames_per_block} frames, got {n}")
        return self._encode(images, times)

    def _encode(self, images, times) -> list[EncodedBlock]:
        times = torch.as_tensor(times, dtype=torch.float64).flatten()
        n_frames = int(images.shape[0])
        if times.numel() != n_frames:
            raise ValueError(f"times has {times.numel()} entries for {n_frames} frames")
        pix, grid = self.pixel_inputs(images)
        tokens, deep = self.video_features(pix, grid)
        gt, gh, gw = int(grid[0, 0]), int(grid[0, 1]) // self.merge, int(grid[0, 2]) // self.merge
        n = gh * gw  # tokens per temporal patch
        m = torch.arange(n)
        payload = torch.cat([tokens.new_zeros(tokens.shape[0], N_POS, dtype=torch.float32)]
                            + [d.float() for d in deep], dim=1)  # (gt*n, 6 + L*d)
        out = []
        for b in range(gt):
            fr = times[b * self.temporal:(b + 1) * self.temporal]
            nf = fr.numel()
            dt = float(fr[-1] - fr[0]) / (nf - 1) if nf > 1 else 0.0
            pl = payload[b * n:(b + 1) * n]
            pl[:, :N_POS] = torch.stack([torch.full((n,), dt), torch.full((n,), float(nf)), (m // gw).float(),
                                         (m % gw).float(), torch.full((n,), float(gh)), torch.full((n,), float(gw))],
                                        1).to(pl.device)
            out.append(EncodedBlock(tokens=tokens[b * n:(b + 1) * n], payload=pl,
                                    times=torch.full((n,), float(fr.mean()), dtype=torch.float64)))
        return out

    # -- kept tokens -> prompt
    def _blocks(self, memory):
        """Per token: block ordinal b (n,), block temporal index t (n,) from the block times.

        t is the block's time in temporal patches since the first block, rounded, and strictly increasing
        (a partial block mid-stream, flushed at a resolution change, sits half a patch off the grid: the
        blocks after it never share its index)."""
        times = torch.as_tensor(memory.times, dtype=torch.float64).cpu()
        uniq, b = torch.unique(times, return_inverse=True)  # blocks in time order
        dt = memory.payload[:, P_DT].float().cpu()
        dt = float(dt[dt > 0].median()) if bool((dt > 0).any()) else 0.0
        period = self.temporal * dt
        if period > 0:
            t = torch.round((uniq - uniq[0]) / period).long()
            k = torch.arange(len(t))
            t = k + torch.cummax(t - k, 0).values  # t[k] = max(round, t[k-1] + 1): unchanged on a regular grid
        else:
            t = torch.arange(len(uniq))
        return b, t, period

    def _layout(self, memory, start: int, positions: str):
        """Full-memory prompt layout: ids (L,), pos (3, L), token (L,) (-1 for text), block (L,), next_pos."""
        pl = memory.payload[:, :N_POS].float().cpu()  # positions only (not Qwen3's deepstack columns)
        n = pl.shape[0]
        i, j = pl[:, P_I].long(), pl[:, P_J].long()
        gh, gw = int(pl[:, P_GH].max()), int(pl[:, P_GW].max())
        b, t, period = self._blocks(memory)
        if self.family != "qwen3_vl":
            if self.family == "qwen2_5_vl" and period > 0:  # original code: (t * second_per_grid_t) * tps, float32
                spg = torch.tensor(period, dtype=torch.float32)
                tpos = (t.float() * spg * self.tokens_per_second).long()[b]  # (n,)
            else:
                tpos = t[b]  # (n,)
            pos = torch.stack([start + tpos, start + i, start + j])  # (3, n)
            if positions == "hf":
                nxt = start + max(gh, gw)
            else:
                nxt = start + max(int(tpos.max()) + 1, gh, gw)
            ids = torch.full((n,), self.video_token_id, dtype=torch.long)
            return ids, pos, torch.arange(n), b, nxt
        # Qwen3-VL: "<t seconds>" <|vision_start|> tokens <|vision_end|> per temporal patch
        times = torch.as_tensor(memory.times, dtype=torch.float64).cpu().numpy()
        bn, i_n, j_n = b.numpy(), i.numpy(), j.numpy()
        order = np.argsort(bn, kind="stable")  # tokens grouped by block, arrival order inside a block
        groups = [g for g in np.split(order, np.cumsum(np.bincount(bn))[:-1]) if len(g)]
        stamps = self._stamps([f"<{times[g[0]]:.1f} seconds>" for g in groups])
        grid_h, grid_w = pl[:, P_GH].long().numpy(), pl[:, P_GW].long().numpy()
        ids, pos, tok, blk = [], [], [], []
        cur = start
        for g, stamp in zip(groups, stamps):
            span = int(max(grid_h[g].max(), grid_w[g].max()))  # the group's own grid (blocks may differ in size)
            nt, ng = len(stamp) + 1, len(g)
            vs = cur + nt  # first position of the vision group
            ids += stamp + [self.vision_start_id] + [self.video_token_id] * ng + [self.vision_end_id]
            text_pos = np.arange(cur, vs)
            pos.append(np.concatenate([np.broadcast_to(text_pos, (3, nt)),
                                       np.stack([np.full(ng, vs), vs + i_n[g], vs + j_n[g]]),
                                       np.full((3, 1), vs + span)], axis=1))
            tok += [-1] * nt + g.tolist() + [-1]
            blk += [int(bn[g[0]])] * (nt + ng + 1)
            cur = vs + span + 1
        return (torch.tensor(ids), torch.from_numpy(np.concatenate(pos, 1)).long(), torch.tensor(tok),
                torch.tensor(blk), cur)

    def _stamps(self, texts: list[str]) -> list[list[int]]:
        """Token ids of timestamp strings, cached (a live stream asks about the same blocks again)."""
        cache = self.__dict__.setdefault("_stamp_cache", {})
        new = [t for t in dict.fromkeys(texts) if t not in cache]
        if new:
            if len(cache) > 100_000:
                cache.clear()
            cache.update(zip(new, self.tokenizer(new, add_special_tokens=False)["input_ids"]))
        return [cache[t] for t in texts]

    def visual_part(self, memory, keep=None, *, start: int, positions: str = "original"):
        if positions not in ("original", "hf"):
            raise ValueError(f"positions must be 'original' or 'hf' for {self.family}, got {positions!r}")
        if memory.payload is None or memory.payload.shape[-1] < N_POS:
            raise ValueError(f"{self.family}: memory payload lacks the grid positions written by encode")
        keep = keep_index(memory, keep)
        ids, pos, tok, blk, nxt = self._layout(memory, start, positions)
        kept = torch.zeros(len(memory), dtype=torch.bool)
        kept[keep] = True
        if self.family == "qwen3_vl":  # drop whole groups (timestamp text too) of blocks with nothing kept
            b, _, _ = self._blocks(memory)
            live = torch.zeros(int(b.max()) + 1, dtype=torch.bool)
            live[b[keep]] = True
            sel = torch.where(tok >= 0, kept[tok.clamp(min=0)], live[blk])
        else:
            sel = kept[tok]
        tok_kept = tok[sel]
        is_vis = tok_kept >= 0
        src = tok_kept[is_vis]  # memory rows in placeholder order (arrival order unless times go back)
        feats = memory.tokens[src.to(memory.tokens.device)]  # (k, d)
        extra = {}
        if self.family == "qwen3_vl":
            deep = memory.payload[src.to(memory.payload.device), N_POS:]  # (k, L*d)
            extra["deepstack"] = list(deep.view(deep.shape[0], -1, self.hidden_size).unbind(1))
        return ids[sel], pos[:, sel], is_vis, feats, extra, nxt

    def encoder_outputs(self, feats, extra) -> dict:
        if self.family != "qwen3_vl":
            return super().encoder_outputs(feats, extra)
        from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

        deep = [(d.to(feats.device, feats.dtype),) for d in extra["deepstack"]]
        return {"video": BaseModelOutputWithDeepstackFeatures(pooler_output=(feats,), deepstack_features=deep)}
