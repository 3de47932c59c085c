"""What a job does and what it answers: AskConfig (every field checked, one-line ValueError) and Answer.

    cfg = AskConfig(budget=1024, method="subspace", fps=1.0)
    answer.text, answer.tokens_to_llm, answer.timings, answer.to_dict()   # Answer: what Pipeline.ask returns
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_MODEL = "Qwen/Qwen2-VL-2B-Instruct"
MIN_MEMORY = 512
# The most memory tokens AskConfig takes before any model is known (2**24 tokens at the smallest real
# hidden size, 1536, is about 0.5 TB of selector state); Pipeline then checks the exact need against the
# memory available on the model's device.
MAX_MEMORY_TOKENS = 2**24
MAX_THUMBS = 16

Progress = Callable[[str, int, "int | None"], None]  # (stage, done, total or None)


# ---------------------------------------------------------------- config
@dataclass
class AskConfig:
    """What the job does. budget: visual tokens given to the LLM; memory: streaming memory size in tokens
    (default max(4 * budget, 512); at most MAX_MEMORY_TOKENS = 2**24, and Pipeline refuses one its device
    cannot hold); method: "subspace" (the streaming subspace selector) or a baseline of
    streamprune.select.METHODS ("ours", the old name of "subspace", is accepted with a DeprecationWarning and
    stored as "subspace"); seed: seeds the selectors that draw random numbers (their own torch.Generator; the
    process's global RNG is never touched; generation is greedy). Every field is checked here: a wrong type or
    value is a one-line ValueError."""

    budget: int = 1024
    memory: int | None = None
    method: str = "subspace"
    fps: float = 1.0
    max_frames: int | None = None
    alpha: float | None = None          # ResPrune exponent; None: 0.3 for Qwen, 0.75 for LLaVA families
    mode: str = "resprune"              # question-stage weighting: resprune | spare
    decoder_prune: object = False       # also prune inside the decoder: True or a DecoderPruneConfig
    max_new_tokens: int = 128
    seed: int = 0
    thumbnails: int = MAX_THUMBS        # frames kept as small thumbnails for --save-kept
    # None: frames are decoded at full size and resized once, by the model's own rule (the stock processors'
    # pixels); h > 1: a frame more than h x the model's input side is downscaled by the decoder first
    # (faster on 4K/8K, a few uint8 levels off the stock pixels)
    decode_headroom: float | None = None
    selector_kw: dict = field(default_factory=dict)

    def __post_init__(self):
        from .select import canonical_method

        self.budget = _int_field("budget", self.budget, 1)
        defaulted = self.memory is None
        if defaulted:  # 4 x budget, at most the limit below (a budget above it is refused there)
            self.memory = max(min(4 * self.budget, MAX_MEMORY_TOKENS), self.budget, MIN_MEMORY)
        self.memory = _int_field("memory", self.memory, 1)
        if self.memory < self.budget:
            raise ValueError(f"memory ({self.memory}) must be >= budget ({self.budget})")
        if self.memory > MAX_MEMORY_TOKENS:
            what = f"budget {self.budget}" if defaulted else f"memory {self.memory}"
            raise ValueError(f"{what} tokens is above the limit of {MAX_MEMORY_TOKENS} (2**24) tokens; "
                             "use a smaller budget / memory")
        self.method = canonical_method(self.method, stacklevel=4)  # "ours" -> "subspace" (DeprecationWarning once)
        self.fps = _real_field("fps", self.fps, positive=True)
        self.max_frames = _int_field("max_frames", self.max_frames, 1, none_ok=True)
        self.alpha = _real_field("alpha", self.alpha, none_ok=True)
        if not isinstance(self.mode, str) or self.mode not in ("resprune", "spare"):
            raise ValueError(f"mode must be resprune or spare, got {self.mode!r}")
        if self.decoder_prune is None:
            self.decoder_prune = False
        if not isinstance(self.decoder_prune, bool):
            from .models.decoder_prune import DecoderPruneConfig

            if not isinstance(self.decoder_prune, DecoderPruneConfig):
                raise ValueError(f"decoder_prune must be True, False or a DecoderPruneConfig, got {self.decoder_prune!r}")
        self.max_new_tokens = _int_field("max_new_tokens", self.max_new_tokens, 1)
        self.seed = _int_field("seed", self.seed, 0)
        self.thumbnails = _int_field("thumbnails", self.thumbnails, 0)
        if self.decode_headroom is not None:
            self.decode_headroom = _real_field("decode_headroom", self.decode_headroom)
            if self.decode_headroom < 1.0:
                raise ValueError(f"decode_headroom must be None or a number >= 1, got {self.decode_headroom!r}")
        if not isinstance(self.selector_kw, dict):
            raise ValueError(f"selector_kw must be a dict, got {type(self.selector_kw).__name__}")


def _int_field(name: str, v, lo: int, *, none_ok: bool = False):
    """An integer option >= lo (numpy integers too; bools, floats, strings, None rejected with ValueError)."""
    if v is None and none_ok:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    if v < lo:
        raise ValueError(f"{name} must be {'positive' if lo == 1 else f'>= {lo}'}, got {v!r}")
    return int(v)


def _real_field(name: str, v, *, positive: bool = False, none_ok: bool = False):
    """A finite real option (> 0 with positive, else >= 0); NaN, inf, bools, strings, None: ValueError."""
    if v is None and none_ok:
        return None
    ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 if positive else v >= 0)
    if not ok:
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {v!r}")
    return float(v)


@dataclass
class Answer:
    text: str
    question: str
    tokens_seen: int                     # visual tokens encoded over the whole stream
    tokens_kept: int                     # tokens in the streaming memory at question time
    tokens_to_llm: int                   # tokens given to the LLM (<= budget)
    span: tuple[float, float]            # stream time covered: first .. last frame seen (seconds)
    timings: dict                        # seconds per stage: decode, encode, select, question, prefill, ttft, generate
    peak_memory_mb: float                # CUDA max allocated on GPU, peak RSS on CPU
    frames: int = 0
    nouns: list = field(default_factory=list)
    kept_span: tuple[float, float] = (0.0, 0.0)   # time range of the tokens given to the LLM
    model: str = ""
    method: str = ""
    budget: int = 0
    memory: int = 0
    decoder_kept: dict = field(default_factory=dict)  # in-decoder stage: {layer: visual tokens after it}
    interrupted: bool = False            # reading was stopped early (Ctrl-C): the answer covers `span` only
    truncated: dict | None = None        # the file held less than its header states: {read_s, stated_s}

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["span"], d["kept_span"] = list(self.span), list(self.kept_span)
        d["timings"] = {k: round(v, 6) for k, v in self.timings.items()}
        d["peak_memory_mb"] = round(self.peak_memory_mb, 1)
        return d


