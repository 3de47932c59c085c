"""Loading a checkpoint: hub id / local folder resolution, device, dtype and attention checks, the chat
template and the video-processor settings where the stock loader finds them, then the family's adapter.

All failures are one-line `ModelLoadError`s (a ValueError); cheap option checks come before any file is read.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path

import torch

from .base import TINY_MARKER, Adapter, ModelLoadError
from .registry import REGISTRY, adapter_class, video_template

log = logging.getLogger(__name__)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16, "float32": torch.float32, "fp32": torch.float32, "float": torch.float32}


def parse_dtype(dtype) -> torch.dtype | None:
    """A torch dtype from a name ("bf16", "float32", "torch.float16", ...) or a torch.dtype; None stays None;
    ModelLoadError for an unknown name."""
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


def load_model(name_or_path, *, device=None, dtype=None, attn_implementation=None) -> Adapter:
    """Load a checkpoint (hub id or local folder) with from_pretrained and wrap it in its family's adapter.

    Defaults: device cuda if available else cpu; dtype bf16 on GPU, fp32 on CPU; attention sdpa
    (flash_attention_2 when asked for and installed)."""
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    dev = parse_device(device) or default_device()  # cheap checks first: no file is read for a bad option
    dt = parse_dtype(dtype) or default_dtype(dev)
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
    is_tiny = bool(getattr(config, TINY_MARKER, False))
    return cls(model, tokenizer, name=str(name_or_path), is_tiny=is_tiny, template=_find_template(src, tokenizer),
               preprocessing=video_preproc_config(src))


def _first_line(e: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message (its type name when it has none)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (f"{lines[0][:limit]}" if lines else "") or type(e).__name__


def _find_template(src: str, tokenizer) -> str | None:
    """A chat template that renders a video item: tokenizer's, else the folder's/hub's chat_template file."""

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
    return video_template(candidates)


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
