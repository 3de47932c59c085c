"""reader -> adapter.encode -> selector -> question stage -> adapter.generate.

Frames stream through in blocks of `adapter.frames_per_block` (2 for Qwen: one temporal patch). Each block is
encoded and pushed to the selector; only the selector's memory (at most `memory` tokens) is kept, never the
whole video's features. At question time the memory is re-scored against the question's nouns and cut to
`budget` tokens, which are all the LLM sees.

    from streamprune.pipeline import ask
    answer = ask("video.mp4", "What does the man pick up?", model="Qwen/Qwen2-VL-2B-Instruct", budget=1024)
    print(answer.text, answer.tokens_to_llm, answer.timings)

AskConfig / Answer live in config.py, the input and memory checks in checks.py, the first-token streamer in
timing.py, the contact-sheet bookkeeping in contact_sheet.py; the names users import from here are kept.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from .checks import (check_memory_fits, check_question, check_save_kept, check_video_path, iter_frames,
                     probe_video)
from .config import DEFAULT_MODEL, MAX_MEMORY_TOKENS, Answer, AskConfig, Progress
from .contact_sheet import Thumbs, save_contact_sheet, token_cells_guess
from .memprobe import PeakMemory, rss_mb  # noqa: F401  (rss_mb: old path, until bench imports memprobe)
from .nouns import extract_nouns
from .timing import FirstTokenTimer

log = logging.getLogger(__name__)

# the names of this module that users and older code import (re-exported from their modules)
__all__ = ["Answer", "AskConfig", "DEFAULT_MODEL", "FirstTokenTimer", "MAX_MEMORY_TOKENS", "Pipeline", "Wrapped",
           "ask", "check_question", "check_save_kept", "check_video_path", "decode_size", "expected_frames",
           "probe_video", "run_video", "wrap"]



def subset_memory(memory, idx: torch.Tensor):
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
        """adapter: a models.Adapter (load_model / wrap_model) or a `wrap()` handle (its adapter, and its config
        unless `config` is given). Nothing process-wide is changed (no global seed): `config.seed` goes to
        the selectors that draw random numbers, each with its own torch.Generator."""
        from .select import default_alpha, make_selector

        if isinstance(adapter, Wrapped):
            config = config or adapter.config
            adapter = adapter.adapter
        self.adapter = adapter
        self.config = config = config or AskConfig()
        self.progress = progress
        fam = getattr(adapter, "family", "")
        self.alpha = config.alpha if config.alpha is not None else default_alpha(fam)
        check_memory_fits(config, adapter)  # a memory the device cannot hold: refused before any frame
        self.selector = make_selector(config.method, config.memory, **self._selector_kw())
        self.pending: list = []            # frames waiting for a full block
        self.frames_seen = 0
        self.blocks = 0
        self.t0: float | None = None
        self.t1: float | None = None
        self.timings = {"decode": 0.0, "encode": 0.0, "select": 0.0}
        self.thumbs = Thumbs(config.thumbnails)
        self.block_of: dict[int, tuple[int, int, tuple[int, int] | None, np.ndarray | None]] = {}
        self.peak = PeakMemory(getattr(adapter, "device", None))
        self.interrupted = False           # run_video was stopped before the end of the video
        self.truncated: dict | None = None  # run_video read a file shorter than its header says
        self.last_final: tuple[torch.Tensor, torch.Tensor] | None = None  # (ids, times) given to the LLM
        self._next_index = 0               # index given to the next numpy frame (thumbnail bookkeeping)

    def _selector_kw(self) -> dict:
        """Constructor options: every method takes the question-stage weighting, the baselines a seed."""
        cfg = self.config
        kw = {"alpha": self.alpha, "question_mode": cfg.mode}
        if cfg.method != "subspace":
            kw["seed"] = cfg.seed
        return {**kw, **cfg.selector_kw}

    def warm(self) -> None:
        """Load the noun tagger now, so that its one-off load time is not part of a question's latency."""
        from .nouns import load_nlp

        load_nlp()

    # -- streaming
    @property
    def tokens_seen(self) -> int:
        return int(self.selector.tokens_seen)

    def push_frames(self, frames: Iterable, times=None) -> None:
        """Encode and select, one block of `adapter.frames_per_block` frames at a time; a partial block waits.

        frames: readers.Frame objects (times=None; a reader can be passed and is streamed), or plain (H, W, 3)
        uint8 RGB numpy arrays -- a list or one (T, H, W, 3) array -- with `times` (T,) in seconds. A wrong
        shape, dtype or time is a one-line ValueError (checks.iter_frames).

        A frame of another size than the pending ones (a resolution change mid-stream) starts a new block: the
        pending partial block is flushed first (padded like a stream's end), so every block is encoded at its
        own size and keeps its frames' own times."""
        fpb = max(1, int(getattr(self.adapter, "frames_per_block", 1)))
        for fr in iter_frames(frames, times, first_index=self._next_index):
            self._next_index = max(self._next_index, int(fr.index) + 1)
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
        sub = subset_memory(memory, idx)
        self.last_final = (sub.ids.clone(), sub.times.clone())
        t_q = time.perf_counter()
        streamer = FirstTokenTimer()
        gen_kw = {"max_new_tokens": max_new_tokens or cfg.max_new_tokens, "streamer": streamer}
        if cfg.decoder_prune:
            gen_kw["decoder_prune"] = self.decoder_prune_config()
        with torch.inference_mode():  # greedy: no random numbers drawn
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


def ask(video, question: str, *, model=DEFAULT_MODEL, device=None, dtype=None, attn=None,
        progress: Progress | None = None, save_kept=None, stop=None, **config) -> Answer:
    """Answer `question` about `video` with at most `budget` visual tokens reaching the LLM.

    `model` is a hub id / local folder, an already loaded Adapter or a `wrap()` handle (whose config fields are
    the defaults here); `config` holds AskConfig fields.
    Everything cheap is checked before the model loads: the options, the question, the video (opened and
    probed) and save_kept. `stop` (an Event or callable, see run_video): stop reading early and answer
    from the frames read so far."""
    if isinstance(model, Wrapped):
        config = {**model.config_fields(), **config}
        model = model.adapter
    cfg = AskConfig(**config)
    check_question(question)
    path = check_video_path(video)
    if save_kept is not None:
        check_save_kept(save_kept)
    if isinstance(model, (str, os.PathLike)):
        from .models import check_attn, parse_device, parse_dtype

        parse_device(device), parse_dtype(dtype), check_attn(attn)
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


# ---------------------------------------------------------------- an already-loaded model
@dataclass(frozen=True)
class Wrapped:
    """What `wrap()` returns: the model's adapter and the AskConfig its calls start from.

    handle.ask(video, question, **overrides) -> Answer; handle.pipeline(**overrides) -> Pipeline; the handle
    can also be passed to `ask(model=...)` and `Pipeline(...)`. overrides: AskConfig fields."""

    adapter: object
    config: AskConfig

    def config_fields(self, **overrides) -> dict:
        return {**{f.name: getattr(self.config, f.name) for f in dataclasses.fields(self.config)}, **overrides}

    def pipeline(self, *, progress: Progress | None = None, **overrides) -> Pipeline:
        cfg = AskConfig(**self.config_fields(**overrides)) if overrides else self.config
        return Pipeline(self.adapter, cfg, progress=progress)

    def ask(self, video, question: str, **overrides) -> Answer:
        return ask(video, question, model=self, **overrides)


def wrap(model, processor, **config) -> Wrapped:
    """Use an already-loaded transformers model with its processor (AutoProcessor.from_pretrained(...)):

        handle = streamprune.wrap(model, processor, budget=512)
        answer = handle.ask("video.mp4", "What happens?")

    The processor's tokenizer, chat template and video-processor settings (pixel bounds, mean/std, patch /
    merge / temporal patch sizes) are used instead of the family's defaults (models.wrap_model, which warns
    with one line where it must fall back). Where the processor samples frames itself (`do_sample_frames`, as
    Qwen3-VL's does), its `fps` is the default frame rate. `config`: AskConfig fields, plus `positions=` for the
    adapter; checked before the adapter is built."""
    from .models import wrap_model

    adapter_kw = {k: config.pop(k) for k in ("positions",) if k in config}
    cfg = AskConfig(**config)  # bad options: one-line ValueError before anything else
    adapter = wrap_model(model, processor, **adapter_kw)
    pp = adapter.preprocessing
    fps = pp.get("fps")
    if "fps" not in config and pp.get("do_sample_frames") and isinstance(fps, (int, float)) and fps > 0:
        log.info("frame rate %.3g fps from the processor (do_sample_frames)", fps)
        cfg = dataclasses.replace(cfg, fps=float(fps))
    return Wrapped(adapter, cfg)
