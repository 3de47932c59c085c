"""Video-LLaVA, LLaVA-OneVision and LLaVA-NeXT-Video adapters (one frame per block, 1D positions).

Video-LLaVA keeps the CLS token for video (257 tokens per 224px frame); LLaVA-OneVision pools each frame
to 196 tokens and appends one learned newline token per video, which build_inputs always adds at the end.
Payload per token: (spatial index s, tokens per frame). A frame's ordinal in the prompt is the rank of its
time among the memory's frames. `positions="original"` (default) gives every kept token the position it
has in the prompt of the whole memory (gaps where tokens were dropped; pruned == masked);
`positions="compact"` renumbers 0..L-1.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..resize import resize_frames
from .base import CLIP_MEAN, CLIP_STD, HALF, Adapter, EncodedBlock, keep_index

P_S, P_N = 0, 1


class _LlavaBase(Adapter):
    frames_per_block = 1
    placeholder = "<video>"
    positions = "original"
    mean_std = (CLIP_MEAN, CLIP_STD)

    def __init__(self, model, tokenizer, **kw):
        super().__init__(model, tokenizer, **kw)
        self.family = model.config.model_type
        if self.positions not in ("original", "compact"):
            raise ValueError(f"positions must be 'original' or 'compact' for {self.family}, got {self.positions!r}")
        vc = self.vision_config
        self.image_size = int(vc.image_size)
        self.patch = int(vc.patch_size)
        pp = self.preprocessing
        mean = pp.get("image_mean") or self.mean_std[0]
        std = pp.get("image_std") or self.mean_std[1]
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    @property
    def vision_config(self):
        return self.model.config.vision_config

    def pixel_values(self, images) -> torch.Tensor:
        """(T, H, W, 3) uint8 -> (1, T, 3, S, S) normalised pixel_values_videos, like the HF processor."""
        images = torch.as_tensor(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
        if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] < 1:
            raise ValueError(f"expected images of shape (T, H, W, 3), got {tuple(images.shape)}")
        x = self.resize(images)  # (T, 3, S, S) in [0, 255]
        x = (x - 255.0 * self.mean) / (255.0 * self.std)
        return x[None]

    def features(self, pixel_values_videos) -> torch.Tensor:
        """(1, T*n (+1 newline), d) LLM-space tokens of a clip, the model's own video path."""
        raise NotImplementedError

    def tokens_per_frame(self) -> int:
        raise NotImplementedError

    cls_first = False  # Video-LLaVA keeps the CLS token first in each frame's tokens

    def token_cells(self, payload):
        p = payload.float().cpu()
        s, per = p[:, 0].long(), int(p[0, 1])  # spatial index within the frame, tokens per frame
        if self.cls_first:
            s, per = s - 1, per - 1
        g = math.isqrt(per)
        if g * g != per:
            return None
        return (g, g), s

    def encode_blocks(self, images, times) -> list[EncodedBlock]:
        """Many frames in one vision pass; one EncodedBlock per frame."""
        blk = self.encode(images, times)
        per = self.tokens_per_frame()
        return [EncodedBlock(blk.tokens[i:i + per], blk.times[i:i + per], blk.payload[i:i + per])
                for i in range(0, len(blk), per)]

    def encode(self, images, times) -> EncodedBlock:
        """One frame (T == 1; several frames are accepted and encoded in one pass, frame after frame)."""
        times = torch.as_tensor(times, dtype=torch.float64).flatten()
        n_frames = int(images.shape[0]) if hasattr(images, "shape") else -1
        if n_frames < 1 or times.numel() != n_frames:
            raise ValueError(f"encode needs (T, H, W, 3) frames and T times, got {n_frames} frames, {times.numel()} times")
        with torch.no_grad():
            feats = self.features(self.pixel_values(images).to(self.device, self.dtype))[0]
        per = self.tokens_per_frame()
        tokens = feats[: n_frames * per]  # (T*per, d); OneVision's newline is added at prompt time
        s = torch.arange(per, dtype=torch.float32).repeat(n_frames)
        payload = torch.stack([s, torch.full_like(s, float(per))], 1).to(self.device)  # (n, 2)
        return EncodedBlock(tokens=tokens, times=times.repeat_interleave(per), payload=payload)

    # -- prompt
    def newline(self) -> torch.Tensor | None:
        return None

    def visual_part(self, memory, keep=None, *, start: int, positions: str = "original"):
        if positions not in ("original", "compact"):
            raise ValueError(f"positions must be 'original' or 'compact' for {self.family}, got {positions!r}")
        if memory.payload is None or memory.payload.shape[-1] < 2:
            raise ValueError(f"{self.family}: memory payload lacks the spatial indices written by encode")
        keep = keep_index(memory, keep)
        times = torch.as_tensor(memory.times, dtype=torch.float64).cpu()
        _, frame = torch.unique(times, return_inverse=True)  # frame ordinal (n,)
        pl = memory.payload.float().cpu()
        s, per = pl[:, P_S].long(), int(pl[:, P_N].max())
        pos = start + frame * per + s  # (n,) full-memory positions
        n_frames = int(frame.max()) + 1
        feats = memory.tokens[keep.to(memory.tokens.device)]  # (k, d)
        pos = pos[keep]
        nl = self.newline()
        if nl is not None:  # one newline per video, always kept, after the frames
            feats = torch.cat([feats, nl.to(feats)[None]])
            pos = torch.cat([pos, torch.tensor([start + n_frames * per])])
        nxt = start + n_frames * per + (nl is not None)
        if positions == "compact":
            pos = start + torch.arange(len(pos))
            nxt = start + len(pos)
        ids = torch.full((len(pos),), self.video_token_id, dtype=torch.long)
        is_vis = torch.ones(len(pos), dtype=torch.bool)  # prunable visual tokens (the newline is not)
        is_vis[len(keep):] = False
        return ids, pos[None], is_vis, feats, {}, nxt

    def encoder_outputs(self, feats, extra) -> dict:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        return {"video": BaseModelOutputWithPooling(pooler_output=feats[None])}


class VideoLlavaAdapter(_LlavaBase):
    default_template = (
        "{% for m in messages %}{% if m['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
        "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
        "{% if c['type'] == 'video' %}<video>\n{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
        "{% endfor %}{% endif %} {% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")

    def frame_size(self, height: int, width: int) -> tuple[int, int]:
        """Shortest edge to the tower's size (the centre crop happens in encode)."""
        if height <= 0 or width <= 0:
            raise ValueError(f"frame size must be positive, got {height}x{width}")
        s = self.image_size
        return (s, int(s * width / height)) if height <= width else (int(s * height / width), s)

    def resize(self, images) -> torch.Tensor:
        h, w = self.frame_size(int(images.shape[1]), int(images.shape[2]))
        x = resize_frames(images, (h, w))  # (T, 3, h, w)
        s = self.image_size
        top, left = (h - s) // 2, (w - s) // 2  # floored, like the stock processors' center_crop
        return x[:, :, top:top + s, left:left + s]

    def token_view(self, height: int, width: int) -> tuple[int, int, int, int]:
        """The centre square that survives the shortest-edge resize + centre crop, in frame pixels."""
        side = min(height, width)
        return (height - side) // 2, (width - side) // 2, side, side

    cls_first = True

    def tokens_per_frame(self) -> int:
        return (self.image_size // self.patch) ** 2 + 1  # CLS kept for video

    def features(self, pixel_values_videos) -> torch.Tensor:
        out = self.model.model.get_video_features(pixel_values_videos,
                                                  vision_feature_layer=self.model.config.vision_feature_layer,
                                                  return_dict=True)
        return out.pooler_output.reshape(1, -1, self.hidden_size)


class OneVisionAdapter(_LlavaBase):
    mean_std = (HALF, HALF)
    default_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
        "{% else %}{% for c in m['content'] %}{% if c['type'] == 'video' %}<video>\n"
        "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

    def frame_size(self, height: int, width: int) -> tuple[int, int]:
        if height <= 0 or width <= 0:
            raise ValueError(f"frame size must be positive, got {height}x{width}")
        return self.image_size, self.image_size

    def resize(self, images) -> torch.Tensor:
        return resize_frames(images, (self.image_size, self.image_size))

    def tokens_per_frame(self) -> int:
        g = math.ceil(self.image_size // self.patch / 2)
        return g * g

    def features(self, pixel_values_videos) -> torch.Tensor:
        cfg = self.model.config
        out = self.model.model.get_video_features(pixel_values_videos, vision_feature_layer=cfg.vision_feature_layer,
                                                  vision_feature_select_strategy=cfg.vision_feature_select_strategy,
                                                  return_dict=True)
        return out.pooler_output  # (1, T*per + 1, d), newline last

    def newline(self) -> torch.Tensor:
        return self.model.model.image_newline.detach()


class NextVideoAdapter(VideoLlavaAdapter):
    """LLaVA-NeXT-Video: like Video-LLaVA's preprocessing (shortest edge + centre crop), tokens average-pooled
    by the model's own resampler (24x24 -> 12x12 = 144 per 336px frame), no newline."""

    cls_first = False

    def tokens_per_frame(self) -> int:
        g = self.image_size // self.patch // int(self.model.config.spatial_pool_stride)
        return g * g

    def features(self, pixel_values_videos) -> torch.Tensor:
        cfg = self.model.config
        out = self.model.model.get_video_features(pixel_values_videos, vision_feature_layer=cfg.vision_feature_layer,
                                                  vision_feature_select_strategy=cfg.vision_feature_select_strategy,
                                                  return_dict=True)
        return out.pooler_output.reshape(1, -1, self.hidden_size)
