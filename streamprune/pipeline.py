"""reader -> adapter.encode -> selector -> question stage -> adapter.generate.

Frames stream through in blocks of `adapter.frames_per_block` (2 for Qwen: one temporal patch). Each block is
encoded and pushed to the selector; only the selector's memory (at most `memory` tokens) is kept, never the
whole video's features. At question time the memory is re-scored against the question's nouns and cut to
`budget` tokens, which are all the LLM sees.

    from streamprune.pipeline import ask
    answer = ask("video.mp4", "What does the man pick up?", model="Qwen/Qwen2-VL-2B-Instruct", budget=1024)
    print(answer.text, answer.tokens_to_llm, answer.timings)
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from .contact_sheet import save_contact_sheet, thumbnail
from .memprobe import PeakMemory, rss_mb  # noqa: F401  (re-exported for callers of the old path)
from .nouns import extract_nouns

log = logging.getLogger(__name__)

DEFAULT_MODEL = "Qwen/Qwen2-VL-2B-Instruct"
MIN_MEMORY = 512
# The most memory tokens AskConfig takes before any model is known (2**24 tokens at the smallest real
# hidden size, 1536, is about 0.5 TB of selector state); Pipeline then checks the exact need against the
# memory available on the model's device.
MAX_MEMORY_TOKENS = 2**24
MAX_THUMBS = 16

Progress = Callable[[str, int, "int | None"], None]  # (stage, done, total or None)


# ---------------------------------------------------------------- config and answer
@dataclass
class AskConfig:
    """What the job does. budget: visual tokens given to the LLM; memory: streaming memory size in tokens
    (default max(4 * budget, 512); at most MAX_MEMORY_TOKENS = 2**24, and Pipeline refuses one its device
    cannot hold); method: "ours" or a baseline of streamprune.select.METHODS. Every field is checked here:
    a wrong type or value is a one-line ValueError."""

    budget: int = 1024
    memory: int | None = None
    method: str = "ours"
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
        from .select import METHODS

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
        if not isinstance(self.method, str) or self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of: {', '.join(METHODS)}")
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


class _FirstToken:
    """A generate() streamer that records when the first new token arrives (the first put() is the prompt)."""

    def __init__(self):
        self.calls, self.first = 0, None

    def put(self, value):
        self.calls += 1
        if self.calls == 2 and self.first is None:
            self.first = time.perf_counter()

    def end(self):
        pass


# ---------------------------------------------------------------- thumbnails for the contact sheet
class _Thumbs:
    """At most `cap` small frames spread evenly over a stream of unknown length: keep every `stride`-th
    frame, doubling the stride (and dropping every other thumbnail) when full."""

    def __init__(self, cap: int):
        self.cap, self.stride, self.items = max(0, cap), 1, {}  # index -> (time, image)

    def offer(self, index: int, t: float, image: np.ndarray) -> None:
        if self.cap == 0 or index % self.stride:
            return
        self.items[index] = (t, thumbnail(image))
        while len(self.items) > self.cap:
            self.stride *= 2
            self.items = {i: v for i, v in self.items.items() if i % self.stride == 0}


def _subset(memory, idx: torch.Tensor):
    """The Memory restricted to rows `idx` (still in arrival order when idx is ascending)."""
    payload = memory.payload
    if payload is not None:
        payload = payload[idx]
    return dataclasses.replace(memory, tokens=memory.tokens[idx], times=memory.times[idx], ids=memory.ids[idx],
                               payload=payload)


# ---------------------------------------------------------------- the pipeline
class Pipeline:
    """Owns one adapter and one selector; frames in, answers out. Holds the selector's memory only."""

    def __init__(self, adapter, config: AskConfig | None = None, *, progress: Progress | None = None):
        from .select import default_alpha, make_selector

        self.adapter = adapter
        self.config = config = config or AskConfig()
        self.progress = progress
        fam = getattr(adapter, "family", "")
        self.alpha = config.alpha if config.alpha is not None else default_alpha(fam)
        check_memory_fits(config, adapter)  # a memory the device cannot hold: refused before any frame
        torch.manual_seed(config.seed)
        self.selector = make_selector(config.method, config.memory, **self._selector_kw())
        self.pending: list = []            # frames waiting for a full block
        self.frames_seen = 0
        self.blocks = 0
        self.t0: float | None = None
        self.t1: float | None = None
        self.timings = {"decode": 0.0, "encode": 0.0, "select": 0.0}
        self.thumbs = _Thumbs(config.thumbnails)
        self.block_of: dict[int, tuple[int, int, tuple[int, int] | None, np.ndarray | None]] = {}
        self.peak = PeakMemory(getattr(adapter, "device", None))
        self.interrupted = False           # run_video was stopped before the end of the video
        self.truncated: dict | None = None  # run_video read a file shorter than its header says
        self.last_final: tuple[torch.Tensor, torch.Tensor] | None = None  # (ids, times) given to the LLM

    def _selector_kw(self) -> dict:
        """Constructor options: ours takes the question-stage weighting, the baselines a seed."""
        cfg = self.config
        kw = {"alpha": self.alpha, "question_mode": cfg.mode} if cfg.method == "ours" else {"seed": cfg.seed}
        return {**kw, **cfg.selector_kw}

    def warm(self) -> None:
        """Load the noun tagger now, so that its one-off load time is not part of a question's latency."""
        from .nouns import _load_nlp

        _load_nlp()

    # -- streaming
    @property
    def tokens_seen(self) -> int:
        return int(self.selector.tokens_seen)

    def push_frames(self, frames: Iterable) -> None:
        """Encode and select, one block of `adapter.frames_per_block` frames at a time; a partial block waits.

        A frame of another size than the pending ones (a resolution change mid-stream) starts a new block: the
        pending partial block is flushed first (padded like a stream's end), so every block is encoded at its
        own size and keeps its frames' own times."""
        fpb = max(1, int(getattr(self.adapter, "frames_per_block", 1)))
        for fr in frames:
            if self.pending and self.pending[-1].image.shape != fr.image.shape:
                (h0, w0), (h1, w1) = self.pending[-1].image.shape[:2], fr.image.shape[:2]
                log.info("frame size changes at %.2fs (%dx%d -> %dx%d): new block", fr.time, w0, h0, w1, h1)
                self.flush()
            self.thumbs.offer(fr.index, fr.time, self._token_view(fr.image))
            self.pending.append(fr)
            if len(self.pending) == fpb:
                self._push_block(self.pending)
                self.pending = []

    def flush(self) -> None:
        """Encode a partial tail block (fewer frames than frames_per_block): the adapter pads it like the stock
        processors do (Qwen: the last frame repeated, with its own time, so Qwen3-VL's timestamp of that
        temporal patch is the frame's time, as stock computes it from the repeated frame index)."""
        if self.pending:
            self._push_block(self.pending)
            self.pending = []

    def _push_block(self, block: list) -> None:
        images = np.stack([f.image for f in block])  # (T, H, W, 3) uint8
        times = [f.time for f in block]
        t = time.perf_counter()
        with torch.inference_mode():
            enc = self.adapter.encode(images, times)
        self.timings["encode"] += time.perf_counter() - t
        first_id = self.tokens_seen
        self.push_encoded(enc, times)
        for pos, f in enumerate(block):
            if f.index in self.thumbs.items:
                self.block_of[f.index] = (first_id, len(enc.tokens), *self._cells(enc, pos, images.shape[1:3]))
        self.block_of = {i: v for i, v in self.block_of.items() if i in self.thumbs.items}

    def push_encoded(self, enc, frame_times) -> None:
        """Select from one already encoded block (EncodedBlock-like: tokens, times, payload) whose real
        frames have times `frame_times`; what push_frames does after encoding (benches feed it directly)."""
        t = time.perf_counter()
        self.selector.push(enc.tokens.float(), enc.times, payload=enc.payload)  # float32 selection math
        self.timings["select"] += time.perf_counter() - t
        real = len(frame_times)
        self.frames_seen += real
        self.blocks += 1
        self.t0 = frame_times[0] if self.t0 is None else self.t0
        self.t1 = frame_times[-1]

    def _token_view(self, image: np.ndarray) -> np.ndarray:
        """The part of a frame its tokens cover (centre crop for Video-LLaVA-style towers)."""
        top, left, h, w = self.adapter.token_view(int(image.shape[0]), int(image.shape[1]))
        return image[top:top + h, left:left + w]

    def _cells(self, enc, frame_pos: int, hw: tuple[int, int]):
        """(grid (rows, cols), local token index -> cell index or -1) for the frame at `frame_pos` in a block."""
        got = self.adapter.token_cells(enc.payload) if enc.payload is not None else None
        if got is not None:
            grid, cells = got
            return grid, cells.numpy()
        return token_cells_guess(enc, frame_pos, hw)

    # -- question
    def relevance(self, question: str, memory) -> tuple[list[str], torch.Tensor | None]:
        from .select import text_relevance

        nouns = extract_nouns(question)
        if not nouns or len(memory) == 0:
            return nouns, None
        with torch.inference_mode():
            text = self.adapter.embed_words(nouns).float()  # (m, d)
        return nouns, text_relevance(memory.tokens.float(), text)

    def ask(self, question: str, *, max_new_tokens: int | None = None, flush: bool = True) -> Answer:
        """Question stage + generate, on the memory as it is now."""
        if not isinstance(question, str) or not question.strip():
            raise ValueError("question must be a non-empty string")
        if flush:
            self.flush()
        if self.blocks == 0:
            raise ValueError("no frames were read from the video")
        cfg = self.config
        t = time.perf_counter()
        memory = self.selector.memory
        nouns, rel = self.relevance(question, memory)
        idx = self.selector.final(min(cfg.budget, len(memory)), rel)
        idx = torch.as_tensor(idx, dtype=torch.long).sort().values
        sub = _subset(memory, idx)
        self.last_final = (sub.ids.clone(), sub.times.clone())
        t_q = time.perf_counter()
        streamer = _FirstToken()
        gen_kw = {"max_new_tokens": max_new_tokens or cfg.max_new_tokens, "streamer": streamer}
        if cfg.decoder_prune:
            gen_kw["decoder_prune"] = self.decoder_prune_config()
        torch.manual_seed(cfg.seed)
        with torch.inference_mode():
            text = self.adapter.generate(sub, question, **gen_kw)
        t_g = time.perf_counter()
        prefill = (streamer.first or t_g) - t_q
        timings = dict(self.timings, question=t_q - t, prefill=prefill, ttft=(t_q - t) + prefill, generate=t_g - t_q)
        times = sub.times.double()
        stats = getattr(self.adapter, "last_prune_stats", None) if cfg.decoder_prune else None
        decoder_kept = {int(k): int(v[0]) for k, v in stats.kept.items()} if stats is not None else {}
        return Answer(
            text=str(text).strip(), question=question, tokens_seen=self.tokens_seen, tokens_kept=len(memory),
            tokens_to_llm=len(sub), span=(float(self.t0), float(self.t1)), timings=timings,
            peak_memory_mb=self.peak.mb(), frames=self.frames_seen, nouns=nouns,
            kept_span=(float(times.min()), float(times.max())) if len(sub) else (0.0, 0.0),
            model=str(getattr(self.adapter, "name", getattr(self.adapter, "family", ""))),
            method=cfg.method, budget=cfg.budget, memory=cfg.memory, decoder_kept=decoder_kept,
            interrupted=bool(self.interrupted), truncated=self.truncated,
        )

    def decoder_prune_config(self):
        """The in-decoder stage's config: AskConfig.decoder_prune itself when it is a DecoderPruneConfig;
        for True, SparseVLM-like defaults: halve the visual tokens before layer 2 (layer 1 on 2-layer models)."""
        from .models.decoder_prune import DecoderPruneConfig

        dp = self.config.decoder_prune
        if isinstance(dp, DecoderPruneConfig):
            return dp
        tc = getattr(self.adapter.model.config, "text_config", self.adapter.model.config)
        n_layers = int(getattr(tc, "num_hidden_layers", 3))
        return DecoderPruneConfig(layers=(min(2, max(1, n_layers - 1)),), keep=(0.5,))

    # -- contact sheet
    def save_kept(self, path) -> None:
        """PNG contact sheet of the thumbnails, with the tokens last given to the LLM highlighted."""
        if not self.thumbs.items:
            raise ValueError("no frames to draw")
        kept_ids = set() if self.last_final is None else set(self.last_final[0].tolist())
        frames, masks, grid = [], [], (0, 0)
        for i in sorted(self.thumbs.items):
            t, img = self.thumbs.items[i]
            frames.append((t, img))
            info = self.block_of.get(i)
            if info is None or info[2] is None:
                masks.append(None)
                continue
            first, n, g, cell_of = info
            grid = g
            mask = np.zeros(g[0] * g[1], dtype=bool)
            local = [j - first for j in kept_ids if first <= j < first + n]
            cells = cell_of[np.asarray(local, dtype=np.int64)] if local else np.zeros(0, np.int64)
            mask[cells[cells >= 0]] = True
            masks.append(mask.reshape(g))
        masks = [m if m is None or m.shape == tuple(grid) else None for m in masks]
        title = f"{len(kept_ids)} tokens to the LLM ({self.config.method}, budget {self.config.budget})"
        save_contact_sheet(path, frames, masks, grid, title=title)


def token_cells_guess(enc, frame_pos: int, hw: tuple[int, int]):
    """Guess one frame's token grid from the block's token count and the frame's aspect ratio.

    Used for families whose adapter does not record positions: tokens laid out row-major on the grid
    (rows * cols == n or n - 1, the extra CLS / newline token, assumed last, mapped nowhere) whose aspect
    ratio is closest to the frame's."""
    n = int(enc.tokens.shape[0])
    H, W = hw
    best = None
    for extra in (0, 1):
        m = n - extra
        for r in range(1, int(math.isqrt(max(m, 1))) * 4 + 2):
            if m > 0 and m % r == 0:
                c = m // r
                err = abs(math.log((r / c) / (H / W)))
                if best is None or err < best[0] - 1e-9:
                    best = (err, extra, r, c)
    if best is None:
        return None, None
    _, extra, r, c = best
    cell = np.full(n, -1, dtype=np.int64)
    cell[: n - extra] = np.arange(n - extra)
    return (r, c), cell


# ---------------------------------------------------------------- the few-lines API
def expected_frames(info, fps: float, max_frames: int | None) -> int | None:
    """How many frames a reader will deliver (for progress bars), or None when unknown."""
    dur = getattr(info, "duration", None)
    n = getattr(info, "frames", None)
    est = None
    if dur and dur > 0:
        ticks = dur * fps
        est = max(1, int(math.floor(ticks + 1e-6))) if ticks < 2**62 else None  # any fps: no float overflow
        if n:
            est = int(n) if est is None else min(est, int(n))
    elif n:
        est = int(n)
    if max_frames is not None:
        est = max_frames if est is None else min(est, max_frames)
    return est


def decode_size(adapter, headroom: float | None = 2.0):
    """Decode-time size cap for the readers, from the adapter's own resize policy: a frame more than
    `headroom` x the model's input size on its larger relative side is shrunk by the decoder (cheap, and a
    4K/8K frame never sits in memory at full size); the model's resize then runs on that, so the pixels
    are a few uint8 levels off the stock processors' (and the grid may differ by a cell). None (AskConfig's
    default): no cap."""
    if headroom is None:  # full-size decode: the model's resize alone, as the stock processors do
        return None
    largest = getattr(adapter, "max_frame_size", adapter.frame_size)  # Qwen3-VL: over every clip length

    def size(h: int, w: int) -> tuple[int, int]:
        th, tw = largest(h, w)
        scale = headroom * max(th / h, tw / w)
        return (h, w) if scale >= 1.0 else (max(2, round(h * scale)), max(2, round(w * scale)))

    return size


def _stopped(stop) -> bool:
    return bool(stop.is_set() if hasattr(stop, "is_set") else stop())


def run_video(pipe: Pipeline, video, *, progress: Progress | None = None, stop=None) -> None:
    """Stream a video file through the pipeline (decode timed separately from encode + select).

    stop: None, a threading.Event or a callable; checked before each frame: once set, reading stops, the
    frames read so far are kept (a partial block is flushed) and `pipe.interrupted` is True, so the next
    `pipe.ask` answers from what was seen (Answer.span, Answer.interrupted). Set before the first frame
    is read, it raises KeyboardInterrupt (nothing to answer from)."""
    from .readers import open_video

    cfg = pipe.config
    progress = progress or pipe.progress
    adapter = pipe.adapter
    before = getattr(adapter, "clip_frames", None)
    size = decode_size(adapter, cfg.decode_headroom)
    with open_video(str(video), fps=cfg.fps, max_frames=cfg.max_frames, size=size) as reader:
        total = expected_frames(getattr(reader, "info", None), cfg.fps, cfg.max_frames)
        planned = getattr(reader, "planned_indices", None)
        # the clip's length, for families that size frames by it (Qwen3-VL, like its stock processor)
        adapter.clip_frames = len(planned) if planned else total
        it = iter(reader)
        done = 0
        try:
            while True:
                if stop is not None and _stopped(stop):
                    pipe.interrupted = True
                    log.info("reading stopped after %d frames", done)
                    break
                t = time.perf_counter()
                fr = next(it, None)
                pipe.timings["decode"] += time.perf_counter() - t
                if fr is None:
                    break
                pipe.push_frames([fr])
                done += 1
                log.debug("frame %d at %.3f s", done, fr.time)
                if progress:
                    progress("frames", done, total)
            pipe.flush()  # an odd tail frame is encoded at the clip's size too
            if getattr(reader, "truncated", False):  # the reader has warned; the answer says so too
                pipe.truncated = {"read_s": float(reader.read_duration or 0.0),
                                  "stated_s": float(reader.stated_duration or 0.0)}
        finally:
            adapter.clip_frames = before
    if done == 0:
        if pipe.interrupted:
            raise KeyboardInterrupt
        raise ValueError(f"no frames could be read from {video}")


def check_question(question) -> str:
    """The question, or ValueError when it is not a non-empty string."""
    if not isinstance(question, str) or not question.strip():
        raise ValueError("question must be a non-empty string" + ("" if isinstance(question, str) else
                                                                  f", got {type(question).__name__}"))
    return question


def check_video_path(video) -> str:
    """The path of an existing, non-empty, readable regular file (a folder, device, FIFO or socket is refused
    here, before a reader could block on it); ReaderError (a ValueError) with the reason otherwise."""
    from .readers import ReaderError
    from .readers.base import check_file

    try:
        path = os.fsdecode(os.fspath(video))
    except TypeError:
        raise ReaderError(f"video must be a file path, got {type(video).__name__}") from None
    if not path:
        raise ReaderError("video path is empty")
    return str(check_file(path))


def check_save_kept(path) -> str:
    """A .png path in an existing folder (for save_kept), or ValueError."""
    p = os.fsdecode(os.fspath(path))
    d = os.path.dirname(os.path.abspath(p))
    if not p.lower().endswith(".png") or not os.path.isdir(d):
        raise ValueError(f"save_kept needs a .png path in an existing folder, got {p}")
    return p


def probe_video(path, config: AskConfig):
    """Open the video and read its header (no frame decoded) with the config's sampling: a corrupt or
    unsupported file fails here, before any model loads. Returns the reader's VideoInfo."""
    from .readers import open_video

    with open_video(str(path), fps=config.fps, max_frames=config.max_frames) as reader:
        return getattr(reader, "info", None)


def available_bytes(device) -> int | None:
    """Memory free for new tensors on `device`: CUDA free + torch's cached blocks; CPU: MemAvailable
    (bounded by the cgroup limit when there is one); None when unknown (other devices)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(dev)
            return int(free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev))
        except (RuntimeError, AssertionError):
            return None
    if dev.type != "cpu":
        return None
    have = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    have = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if have is None:
        try:
            have = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    try:  # cgroup v2: a container's limit can be far below the host's MemAvailable
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit != "max":
            with open("/sys/fs/cgroup/memory.current") as f:
                have = min(have, int(limit) - int(f.read().strip()))
    except (OSError, ValueError):
        pass
    return max(0, have)


def _payload_width(adapter) -> int:
    """Float columns of a token's payload (Qwen3-VL carries its deepstack features)."""
    if getattr(adapter, "family", "") == "qwen3_vl":
        vc = getattr(getattr(adapter, "config", None), "vision_config", None)
        return 6 + len(getattr(vc, "deepstack_visual_indexes", None) or ()) * int(adapter.hidden_size)
    return 6


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def check_memory_fits(config: AskConfig, adapter) -> None:
    """Refuse a memory the adapter's device cannot hold once full (selector.memory_bytes: tokens x hidden
    size x 4 bytes, plus bases and payload) with the reason and the largest memory that would fit."""
    from .select import memory_bytes

    d = getattr(adapter, "hidden_size", None)
    if not isinstance(d, int) or d <= 0:
        return
    device = getattr(adapter, "device", None)
    kw = dict(payload_width=_payload_width(adapter), recycle=bool(config.selector_kw.get("recycle")))
    need = memory_bytes(config.memory, d, **kw)
    have = available_bytes(device)
    if have is None or need <= have:
        return
    lo, hi = 0, config.memory  # the largest memory that fits: bisection on the estimate
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if memory_bytes(mid, d, **kw) <= have else (lo, mid - 1)
    raise ValueError(f"a memory of {config.memory} tokens at hidden size {d} needs about {_gib(need)}, but "
                     f"{device or 'cpu'} has {_gib(have)} available; use a memory (and budget) of at most {lo} tokens")


def ask(video, question: str, *, model=DEFAULT_MODEL, device=None, dtype=None, attn=None,
        progress: Progress | None = None, save_kept=None, stop=None, **config) -> Answer:
    """Answer `question` about `video` with at most `budget` visual tokens reaching the LLM.

    `model` is a hub id / local folder or an already loaded Adapter; `config` holds AskConfig fields.
    Everything cheap is checked before the model loads: the options, the question, the video (opened and
    probed) and save_kept. `stop` (an Event or callable, see run_video): stop reading early and answer
    from the frames read so far."""
    cfg = AskConfig(**config)
    check_question(question)
    path = check_video_path(video)
    if save_kept is not None:
        check_save_kept(save_kept)
    if isinstance(model, (str, os.PathLike)):
        from .models.base import _parse_dtype, check_attn, parse_device

        parse_device(device), _parse_dtype(dtype), check_attn(attn)
    probe_video(path, cfg)
    if isinstance(model, (str, os.PathLike)):
        from .models import load_model

        adapter = load_model(model, device=device, dtype=dtype, attn_implementation=attn)
    else:
        adapter = model
    pipe = Pipeline(adapter, cfg, progress=progress)
    pipe.warm()
    run_video(pipe, path, progress=progress, stop=stop)
    answer = pipe.ask(question)
    if save_kept is not None:
        pipe.save_kept(save_kept)
    return answer
