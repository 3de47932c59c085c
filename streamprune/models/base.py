"""Adapter base class, loading registry and shared prompt helpers.

An adapter turns frames into LLM-space visual tokens (`encode`) and a kept set of those tokens plus a
question into model inputs (`build_inputs`) with exactly one video placeholder per kept token and the
positions each token had in the full prompt. Generation goes through
`mm_encoder_outputs={"video": ...}` with an explicit all-ones attention mask (DESIGN section 4).
"""

from __future__ import annotations

import contextlib
import json
import importlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

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


# model_type -> (module, class name)
REGISTRY = {
    "qwen2_vl": ("qwen_vl", "QwenVLAdapter"),
    "qwen2_5_vl": ("qwen_vl", "QwenVLAdapter"),
    "qwen3_vl": ("qwen_vl", "QwenVLAdapter"),
    "video_llava": ("llava", "VideoLlavaAdapter"),
    "llava_onevision": ("llava", "OneVisionAdapter"),
    "llava_next_video": ("llava", "NextVideoAdapter"),
}


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16, "float32": torch.float32, "fp32": torch.float32, "float": torch.float32}


def _parse_dtype(dtype) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype).lower().removeprefix("torch.") not in _DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use bfloat16, float16 or float32")
    return _DTYPES[str(dtype).lower().removeprefix("torch.")]


def parse_device(device, *, allow_meta: bool = False) -> torch.device | None:
    """A torch.device that this build and machine can use (None stays None: the default device);
    ModelLoadError with one line for a malformed name ("banana"), a backend this build lacks or a
    missing device (cuda on a CPU-only build or machine, cuda:7 on a 1-GPU machine)."""
    if device is None:
        return None
    if isinstance(device, int) and not isinstance(device, bool):
        device = f"cuda:{device}"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ModelLoadError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
    kind = dev.type
    if kind == "cpu" or (kind == "meta" and allow_meta):
        return dev
    if kind == "meta":
        raise ModelLoadError("device 'meta' holds no weights; use cpu, cuda, cuda:N or mps")
    if kind == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ModelLoadError(f"device {device!r} asked for, but {why}; use --device cpu")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise ModelLoadError(f"device {device!r} asked for, but only {n} CUDA device(s) are visible "
                                 f"(cuda:0..cuda:{n - 1})")
        return dev
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ModelLoadError(f"device {device!r} asked for, but MPS is not available; use --device cpu")
        return dev
    backend = getattr(torch, kind, None)  # xpu, npu, ...: their own is_available()
    if backend is None or not hasattr(backend, "is_available") or not backend.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but it is not available; use cpu or cuda")
    return dev


# attention implementations transformers 5 takes by name (hub kernels "owner/repo" are passed through)
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")


def check_attn(attn) -> str | None:
    """The attention implementation name (None: the default, sdpa); ModelLoadError for an unknown one or
    flash_attention_2 without flash_attn installed."""
    if attn is None:
        return None
    if not isinstance(attn, str) or not attn.strip():
        raise ModelLoadError(f"attention implementation must be a name, got {attn!r}")
    if attn not in ATTN_IMPLEMENTATIONS and "/" not in attn:
        raise ModelLoadError(f"unknown attention implementation {attn!r}; use one of {', '.join(ATTN_IMPLEMENTATIONS)}")
    if attn == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ModelLoadError("attn_implementation 'flash_attention_2' asked for but flash_attn is not installed")
    return attn


def adapter_class(model_type: str):
    if model_type not in REGISTRY:
        raise ModelLoadError(f"unsupported architecture {model_type!r}; supported: {', '.join(REGISTRY)}")
    mod, cls = REGISTRY[model_type]
    return getattr(importlib.import_module(f"streamprune.models.{mod}"), cls)


def adapter_for(model, tokenizer, *, name: str = "", is_tiny: bool = False, **kw) -> "Adapter":
    """Wrap an already-built transformers model in the adapter of its family."""
    return adapter_class(model.config.model_type)(model, tokenizer, name=name, is_tiny=is_tiny, **kw)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers at all (avoids minutes of retries when offline)."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _check_model_type(name_or_path, model_type) -> None:
    if model_type not in REGISTRY:
        raise ModelLoadError(f"cannot load {name_or_path!r}: unsupported architecture {model_type!r} "
                             f"(supported: {', '.join(REGISTRY)})")


# what to do next when a hub id cannot be had (offline first run, typo)
OFFLINE_HINT = ("pass --model DIR with a local checkpoint, or `streamprune tiny-model qwen2_vl DIR` "
                "for an offline smoke run")


def _resolve(name_or_path) -> tuple[str, bool]:
    """(source for from_pretrained, local_files_only); raises ModelLoadError with one line."""
    import json

    from transformers import AutoConfig

    raw = str(name_or_path)
    path = Path(os.path.expanduser(raw))
    if path.is_dir():
        cfg = path / "config.json"
        if not cfg.is_file():
            raise ModelLoadError(f"cannot load {raw!r}: folder has no config.json")
        try:
            _check_model_type(raw, json.loads(cfg.read_text()).get("model_type"))
        except json.JSONDecodeError:
            raise ModelLoadError(f"cannot load {raw!r}: config.json is not valid JSON") from None
        return str(path), True
    if path.exists():
        raise ModelLoadError(f"cannot load {raw!r}: not a model folder (expected a folder with config.json)")
    if raw.startswith((".", "/", "~")) or raw.count("/") != 1:
        raise ModelLoadError(f"cannot load {raw!r}: no such folder, and not a hub id (owner/name)")
    for local_only in (True, False):
        if not local_only and not _hub_reachable():
            raise ModelLoadError(f"cannot load {raw!r}: not a local folder and not in the Hugging Face cache "
                                 f"(offline?); {OFFLINE_HINT}")
        try:
            config = AutoConfig.from_pretrained(raw, local_files_only=local_only)
        except ValueError:
            raise ModelLoadError(f"cannot load {raw!r}: unsupported architecture (unknown to transformers)") from None
        except OSError:
            continue
        _check_model_type(raw, getattr(config, "model_type", None))
        return raw, local_only
    raise ModelLoadError(f"cannot load {raw!r}: not found on the Hugging Face hub; {OFFLINE_HINT}")


def load_model(name_or_path, *, device=None, dtype=None, attn_implementation=None) -> "Adapter":
    """Load a checkpoint (hub id or local folder) with from_pretrained and wrap it in its family's adapter.

    Defaults: device cuda if available else cpu; dtype bf16 on GPU, fp32 on CPU; attention sdpa
    (flash_attention_2 when asked for and installed)."""
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    dev = parse_device(device) or default_device()  # cheap checks first: no file is read for a bad option
    dt = _parse_dtype(dtype) or default_dtype(dev)
    attn = check_attn(attn_implementation) or "sdpa"
    src, local_only = _resolve(name_or_path)
    try:
        model = AutoModelForImageTextToText.from_pretrained(src, dtype=dt, attn_implementation=attn,
                                                            local_files_only=local_only)
        tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=local_only)
    except Exception as e:  # noqa: BLE001 - OSError, ValueError, SafetensorError (truncated weights), ...
        raise ModelLoadError(f"cannot load {name_or_path!r}: {_first_line(e)}") from None
    if not tokenizer("a video", add_special_tokens=False)["input_ids"]:  # transformers builds one with no files
        raise ModelLoadError(f"cannot load {name_or_path!r}: its tokenizer has no vocabulary (tokenizer.json / "
                             "vocab files missing?)")
    cls = adapter_class(model.config.model_type)
    config = model.config
    try:
        model = model.to(dev).eval()
    except RuntimeError as e:  # torch.OutOfMemoryError too
        raise ModelLoadError(f"cannot load {name_or_path!r} onto {dev}: {_first_line(e)}") from None
    from .tiny import TINY_MARKER

    is_tiny = bool(getattr(config, TINY_MARKER, False))
    return cls(model, tokenizer, name=str(name_or_path), is_tiny=is_tiny, template=_find_template(src, tokenizer),
               source=src)


def _first_line(e: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message (its type name when it has none)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (f"{lines[0][:limit]}" if lines else "") or type(e).__name__


def _find_template(src: str, tokenizer) -> str | None:
    """A chat template that renders a video item: tokenizer's, else the folder's/hub's chat_template file."""
    import json

    candidates = [getattr(tokenizer, "chat_template", None)]
    try:
        from transformers.utils import cached_file

        for fname in ("chat_template.jinja", "chat_template.json"):
            f = cached_file(src, fname, _raise_exceptions_for_missing_entries=False,
                            _raise_exceptions_for_connection_errors=False)
            if f:
                text = Path(f).read_text()
                candidates.append(json.loads(text)["chat_template"] if fname.endswith("json") else text)
    except Exception as e:  # noqa: BLE001 - a template file is optional
        log.debug("no chat template file: %s", e)
    for t in candidates:
        if isinstance(t, dict):
            t = t.get("default")
        if isinstance(t, str) and "video" in t:
            return t
    return None


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
                 positions: str | None = None):
        self.model = model
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


# the stock loader's order (transformers 5.x BaseVideoProcessor.get_video_processor_dict): the nested
# "video_processor" entry of processor_config.json, then video_preprocessor_config.json, then the image
# processor's preprocessor_config.json (many hub checkpoints, e.g. Qwen2-VL, ship only the last)
PREPROC_FILES = ("processor_config.json", "video_preprocessor_config.json", "preprocessor_config.json")


def _read_json(source, fname: str) -> dict | None:
    try:
        from transformers.utils import cached_file

        f = cached_file(source, fname, _raise_exceptions_for_missing_entries=False,
                        _raise_exceptions_for_connection_errors=False)
        return json.loads(Path(f).read_text()) if f else None
    except Exception as e:  # noqa: BLE001 - optional file; a broken one is reported and skipped
        log.warning("ignoring %s of %s: %s", fname, source, str(e).splitlines()[0][:200] if str(e) else type(e).__name__)
        return None


def video_preproc_config(source) -> dict:
    """The checkpoint's video preprocessing settings, found where the stock video processor finds them
    ({} when the folder has none: the family's class defaults apply)."""
    if not source:
        return {}
    for fname in PREPROC_FILES:
        d = _read_json(source, fname)
        if d is None:
            continue
        if fname == PREPROC_FILES[0]:
            if isinstance(d.get("video_processor"), dict):
                return d["video_processor"]
            continue  # a flat processor_config.json holds processor (not video) settings
        if isinstance(d, dict):
            return d
    return {}
