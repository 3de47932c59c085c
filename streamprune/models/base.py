"""The adapter contract: what every family adapter provides (`Adapter`), what `encode` returns
(`EncodedBlock`), and the shared prompt builder.

An adapter turns frames into LLM-space visual tokens (`encode`) and a kept set of those tokens plus a
question into model inputs (`build_inputs`) with exactly one video placeholder per kept token and the
positions each token had in the full prompt. Generation goes through
`mm_encoder_outputs={"video": ...}` with an explicit all-ones attention mask (docs/design.md §4).
Loading (hub ids, folders, dtypes, devices) is in `loading.py`; the family registry and wrapping an
already-loaded model in `registry.py`.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

TINY_MARKER = "streamprune_tiny"  # config attribute set on the tiny random-weight models (models.tiny)

# image normalisation of the vision towers (CLIP; SigLIP-style towers use 0.5)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)


class ModelLoadError(ValueError):
    """A model could not be loaded; the message is one line."""


@dataclass
class EncodedBlock:
    tokens: torch.Tensor   # (n, d) LLM-space visual tokens, model dtype, on the model device
    times: torch.Tensor    # (n,) float64 seconds
    payload: torch.Tensor  # (n, p) float32 per-token prompt data (positions, deepstack, ...)

    def __len__(self) -> int:
        return self.tokens.shape[0]



# ---------------------------------------------------------------- the adapter
class Adapter:
    """Common part of every family adapter; subclasses fill in encode and the visual part of the prompt."""

    family: str = ""
    frames_per_block: int = 1
    placeholder: str = "<video>"     # the template's one video placeholder token
    default_template: str = ""       # used when the checkpoint's templates do not render videos
    positions: str = "original"      # position convention of build_inputs (family-specific values)
    # frames in the clip being encoded, for families whose frame size depends on the clip's length
    # (Qwen3-VL); None: a stream of unknown length (the family's live policy). Set by pipeline.run_video.
    clip_frames: int | None = None

    def __init__(self, model, tokenizer, *, name: str = "", is_tiny: bool = False, template: str | None = None,
                 positions: str | None = None, preprocessing: dict | None = None):
        """preprocessing: the checkpoint's video-processor settings (a stock video processor's to_dict() or
        its JSON file); {} / None: the family's class defaults. Families read what they need from it."""
        self.model = model
        self.preprocessing = dict(preprocessing or {})
        self.tokenizer = tokenizer
        self.name = name
        self.is_tiny = is_tiny
        self.template = template or (getattr(tokenizer, "chat_template", None)
                                     if "video" in str(getattr(tokenizer, "chat_template", "") or "") else None)
        if positions is not None:
            self.positions = positions
        self.last_prune_stats = None
        self.config = model.config
        self.text_config = getattr(model.config, "text_config", model.config)
        self.hidden_size = int(self.text_config.hidden_size)
        self.video_token_id = int(getattr(model.config, "video_token_id", None)
                                  if getattr(model.config, "video_token_id", None) is not None
                                  else model.config.video_token_index)

    # -- properties
    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, family={self.family}, hidden={self.hidden_size})"

    # -- to be provided by families
    def frame_size(self, height: int, width: int) -> tuple[int, int]:
        raise NotImplementedError

    def max_frame_size(self, height: int, width: int) -> tuple[int, int]:
        """The largest model input size of this frame for any clip length (a safe decode-time cap)."""
        return self.frame_size(height, width)

    def encode(self, images, times) -> EncodedBlock:
        raise NotImplementedError

    def token_view(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, left, h, w) of the region of a height x width frame that the tokens cover."""
        return 0, 0, height, width

    def token_cells(self, payload) -> tuple[tuple[int, int], torch.Tensor] | None:
        """Where one frame's tokens sit on the frame: ((rows, cols) grid, (n,) long cell index row-major,
        -1 for tokens with no place such as CLS), from the payload `encode` wrote; None if unknown."""
        return None

    def encode_blocks(self, images, times) -> list[EncodedBlock]:
        """Several blocks at once (T a multiple of frames_per_block): one EncodedBlock per block, the same as
        calling encode block by block (families override this with one batched vision pass)."""
        n, fpb = int(images.shape[0]), self.frames_per_block
        if n == 0 or n % fpb:
            raise ValueError(f"encode_blocks needs a positive multiple of {fpb} frames, got {n}")
        times = torch.as_tensor(times, dtype=torch.float64).flatten()
        return [self.encode(images[i:i + fpb], times[i:i + fpb]) for i in range(0, n, fpb)]

    def visual_part(self, memory, keep=None, *, start: int, positions: str = "original"):
        """The video span of the prompt, starting at position `start`: (ids (v,), positions (P, v),
        is_visual (v,) bool, feats (k, d) in placeholder order, extra dict, next text position int)."""
        raise NotImplementedError

    def encoder_outputs(self, feats, extra) -> dict:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        return {"video": BaseModelOutputWithPooling(pooler_output=(feats,))}

    # -- shared
    def embed_words(self, words) -> torch.Tensor:
        """(m, d) float32: each word's mean sub-word input embedding (the model's own embedding table)."""
        words = [words] if isinstance(words, str) else list(words)
        table = self.model.get_input_embeddings().weight
        out = torch.empty(len(words), table.shape[1], dtype=torch.float32, device=table.device)  # (m, d)
        for i, w in enumerate(words):
            w = str(w).strip()
            if not w:
                raise ValueError("embed_words: empty word")
            # the mid-sentence form (" word") unless the tokenizer splits it more than the bare word
            spaced = self.tokenizer(" " + w, add_special_tokens=False)["input_ids"]
            bare = self.tokenizer(w, add_special_tokens=False)["input_ids"]
            ids = spaced if spaced and (len(spaced) <= len(bare) or not bare) else bare
            out[i] = table[torch.as_tensor(ids, device=table.device)].float().mean(0)
        return out

    def render_prompt(self, question: str) -> tuple[list[int], list[int]]:
        """Token ids before and after the single video placeholder of the chat-templated prompt."""
        if not isinstance(question, str) or not question.strip():
            raise ValueError("question must be a non-empty string")
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
        text = None
        for tmpl in (self.template, self.default_template):
            if not tmpl:
                continue
            try:
                text = self.tokenizer.apply_chat_template(messages, chat_template=tmpl, tokenize=False,
                                                          add_generation_prompt=True)
            except Exception as e:  # noqa: BLE001 - fall back to the family template
                log.debug("chat template failed: %s", e)
                continue
            if text.count(self.placeholder) == 1:
                break
            text = None
        if text is None:
            raise ValueError(f"{self.family}: no chat template renders exactly one {self.placeholder} video placeholder")
        ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        ph = self.tokenizer.convert_tokens_to_ids(self.placeholder)
        where = [i for i, t in enumerate(ids) if t == ph]
        if len(where) != 1:
            raise ValueError(f"{self.family}: prompt tokenises to {len(where)} video placeholders, expected 1")
        return ids[: where[0]], ids[where[0] + 1:]

    def build_inputs(self, memory, question: str, *, keep=None, positions: str | None = None) -> dict:
        """Model kwargs for `model(**)` / `model.generate(**)`: input_ids (1, L), attention_mask ones (1, L),
        position_ids, mm_encoder_outputs. `keep` (optional, indices into memory) builds the prompt of that
        subset with the positions the tokens have in the prompt of the whole memory."""
        if len(memory) == 0:
            raise ValueError("memory is empty: no visual tokens to answer from")
        pre, post = self.render_prompt(question)
        pos_mode = positions or self.positions
        ids_v, pos_v, is_vis, feats, extra, nxt = self.visual_part(memory, keep, start=len(pre), positions=pos_mode)
        dev = self.device
        pre_t = torch.as_tensor(pre, dtype=torch.long)
        post_t = torch.as_tensor(post, dtype=torch.long)
        ids = torch.cat([pre_t, ids_v.cpu(), post_t])  # (L,)
        P = pos_v.shape[0]
        pos = torch.cat([torch.arange(len(pre)).expand(P, -1), pos_v.cpu(),
                         (torch.arange(len(post)) + nxt).expand(P, -1)], dim=1)  # (P, L)
        visual = torch.cat([torch.zeros(len(pre), dtype=torch.bool), is_vis.cpu(),
                            torch.zeros(len(post), dtype=torch.bool)])
        pos = pos[:, None, :] if P == 3 else pos  # Qwen (3, 1, L); 1D (1, L)
        return dict(input_ids=ids[None].to(dev), attention_mask=torch.ones(1, ids.numel(), dtype=torch.long, device=dev),
                    position_ids=pos.to(dev), mm_encoder_outputs=self.encoder_outputs(feats.to(dev, self.dtype), extra),
                    visual_mask=visual[None].to(dev))

    @staticmethod
    def model_kwargs(inputs: dict) -> dict:
        """build_inputs output without our own keys (what model(...) / generate(...) accept)."""
        return {k: v for k, v in inputs.items() if k != "visual_mask"}

    @torch.no_grad()
    def logits(self, inputs: dict) -> torch.Tensor:
        """(L, V) float32 logits of one forward over built inputs."""
        return self.model(**self.model_kwargs(inputs), use_cache=False).logits[0].float()

    @torch.no_grad()
    def prefill(self, memory, question: str, *, decoder_prune=None) -> torch.Tensor:
        """One forward over the prompt (time-to-first-token); returns the first generated token id (1,)."""
        inputs = self.build_inputs(memory, question)
        with self._decoder_prune(decoder_prune, inputs):
            out = self.model(**self.model_kwargs(inputs), use_cache=True, logits_to_keep=1)
        return out.logits[0, -1].argmax(-1, keepdim=True)

    def _decoder_prune(self, config, inputs):
        """The in-decoder stage around a forward/generate: `config` a DecoderPruneConfig, True for defaults,
        None/False for none. Stats of the last use land in `self.last_prune_stats`."""
        if config is None or config is False:
            return contextlib.nullcontext()
        from . import decoder_prune as dp  # imported only when asked for

        if config is True:
            config = dp.DecoderPruneConfig()
        return self._stats_of(dp.decoder_prune(self.model, config, inputs["visual_mask"]))

    @contextlib.contextmanager
    def _stats_of(self, ctx):
        with ctx as stats:
            self.last_prune_stats = stats
            yield stats

    @torch.no_grad()
    def generate_ids(self, memory, question: str, *, max_new_tokens: int = 64, decoder_prune=None,
                     **gen) -> torch.Tensor:
        """(n,) generated token ids (prompt excluded); greedy unless `gen` says otherwise."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        inputs = self.build_inputs(memory, question, positions=gen.pop("positions", None))
        gen.setdefault("do_sample", False)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with self._decoder_prune(decoder_prune, inputs):
            out = self.model.generate(**self.model_kwargs(inputs), max_new_tokens=max_new_tokens,
                                      pad_token_id=pad, **gen)
        return out[0, inputs["input_ids"].shape[1]:]

    def generate(self, memory, question: str, *, max_new_tokens: int = 64, decoder_prune=None, **gen) -> str:
        """Answer text (greedy by default); `gen` goes to model.generate (plus `positions=` for build_inputs)."""
        ids = self.generate_ids(memory, question, max_new_tokens=max_new_tokens, decoder_prune=decoder_prune, **gen)
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()


def keep_index(memory, keep) -> torch.Tensor:
    """(k,) ascending long indices into memory (all when keep is None); validated."""
    n = len(memory)
    if keep is None:
        return torch.arange(n)
    keep = torch.as_tensor(keep, dtype=torch.long).flatten().cpu()
    if keep.numel() == 0:
        raise ValueError("keep is empty: no visual tokens to answer from")
    if int(keep.min()) < 0 or int(keep.max()) >= n:
        raise ValueError(f"keep indices out of range for a memory of {n} tokens")
    keep = torch.unique(keep)  # sorted, arrival order
    return keep


