"""`lmms-eval --model streamprune`: any lmms-eval video task through streamprune's readers and selector.

    lmms-eval eval --model streamprune \\
        --model_args pretrained=Qwen/Qwen2-VL-7B-Instruct,budget=1024,method=subspace,fps=1 \\
        --tasks videomme,mvbench,mlvu,longvideobench,egoschema --log_samples --output_path out/lmms

Registered through the `lmms_eval.models` entry point (streamprune.integrations.lmms_eval_manifest); the stock
task configs run unchanged: their prompts go to the model's chat template as the question, their answer
extraction and metrics score the text. Each video is streamed through `streamprune.Pipeline` (frames read at
`fps` by streamprune's readers, encoded one block at a time, only the selector's memory kept), so memory stays
flat in video length; at most `budget` visual tokens reach the LLM.

model_args (the constructor's arguments):
    pretrained        hub id, local folder or preset (streamprune.load_model)
    budget            visual tokens given to the LLM (default 1024)
    retention_ratio   instead of budget: kept / all visual tokens of the video (the peers' convention). The
                      budget is set from the video's full token count, predicted before streaming from its
                      first block and sampled frame count; the realised value (tokens_to_llm / tokens_seen)
                      is logged per sample
    memory            streaming memory in tokens (default max(4 x budget, 512)); "all": the whole video's
                      predicted token count (selection over every token at question time)
    method            any of streamprune.select.METHODS ("ours" = "subspace"), or "full": every visual token
                      to the LLM (uniform with budget = memory = the video's predicted token count)
    fps, max_frames   frame sampling (max_frames: offline protocol only)
    decoder_prune     also prune inside the decoder (True / False)
    protocol          "offline" (default): each question is answered from its own video, read whole;
                      "streaming": questions are asked when playback reaches their time, on the memory as it
                      is then (below)
    device, dtype, attn_implementation     as streamprune.load_model
    batch_size        1 (videos are streamed one at a time; anything else is refused)
    log_path          per-sample JSONL (tokens seen / to the LLM, realised retention, TTFT, prefill and
                      generate time, peak memory); default: <--output_path>/streamprune/<time>_<pid>.jsonl
                      when lmms-eval's CLI has --output_path; "none": no log
    seed, alpha, mode, decode_headroom     AskConfig fields

Offline protocol: requests on the same video share one read of it (the memory is question-agnostic until the
question stage), in the requests' original order of results.

Streaming protocol (OVO-Bench's `ovobench` tasks: ovo_backward, ovo_realtime, ovo_forward):
- single-round requests whose documents name their source video and query time (OVO-Bench: `video` and
  `realtime`; `video_field` / `time_field` to rename) are grouped per source video: one Pipeline plays the
  longest clip of the group (OVO-Bench's chunks are prefixes of the source, cut at each question's time) once,
  and each question is asked, in time order, when playback passes its time: every token in memory is from a
  frame at or before it (full blocks only: a Qwen block still missing its second frame waits for it);
- multi-round requests (ovo_forward, generate_until_multi_round) keep one Pipeline per document: round i's clip
  is read from the first sampling tick after what was already seen, so each frame is decoded and encoded once;
- other requests: their own clip is played and the question asked at its end.
In retention / full / memory=all modes the token count is predicted from the first clip played (the group's
longest clip; round 0's clip for multi-round requests); the realised retention is logged per question.
`window` (a sliding window of recent frames) is the streaming baseline.

loglikelihood requests (lmms-eval's `multiple_choice` output type) are refused: streamprune generates.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lmms_eval.api.instance import GenerationResult, TokenCounts
from lmms_eval.api.model import lmms

log = logging.getLogger(__name__)

PROTOCOLS = ("offline", "streaming")
FULL = "full"
_NONE = ("", "none", "null")
_EPS = 1e-6


# ---------------------------------------------------------------- option parsing (one-line ValueErrors)
def _is_none(v) -> bool:
    return v is None or (isinstance(v, str) and v.strip().lower() in _NONE)


def _opt_int(name: str, v, lo: int = 1):
    if _is_none(v):
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, str) and v.strip().isdigit():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"streamprune: {name} must be an integer >= {lo}, got {v!r}")
    return v


def _opt_float(name: str, v, *, lo: float = 0.0, hi: float = math.inf, lo_open: bool = True):
    if _is_none(v):
        return None
    try:
        x = float(v) if not isinstance(v, bool) else math.nan
    except (TypeError, ValueError):
        x = math.nan
    if not (math.isfinite(x) and (x > lo if lo_open else x >= lo) and x <= hi):
        raise ValueError(f"streamprune: {name} must be a number in {'(' if lo_open else '['}{lo}, {hi}], got {v!r}")
    return x


def _opt_bool(name: str, v) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return v.strip().lower() in ("true", "1", "yes")
    raise ValueError(f"streamprune: {name} must be true or false, got {v!r}")


def _argv_value(flag: str, argv=None) -> str | None:
    """The value of `--flag X` / `--flag=X` on the command line (lmms-eval's CLI), None when absent."""
    argv = sys.argv if argv is None else argv
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def default_log_path(argv=None) -> Path | None:
    """<--output_path>/streamprune/<YYYYmmdd_HHMMSS>_<pid>.jsonl when the CLI has --output_path, else None."""
    out = _argv_value("--output_path", argv)
    if not out:
        return None
    return Path(out) / "streamprune" / f"{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}.jsonl"


def video_of(visuals, task: str) -> str:
    """The one video file path among a task's doc_to_visual output, or a one-line ValueError."""
    flat, stack = [], [visuals]
    while stack:
        v = stack.pop()
        if isinstance(v, (list, tuple)):
            stack.extend(reversed(v))
        elif v is not None:
            flat.append(v)
    paths = [v for v in flat if isinstance(v, (str, os.PathLike))]
    if len(paths) != len(flat):
        kinds = sorted({type(v).__name__ for v in flat if not isinstance(v, (str, os.PathLike))})
        raise ValueError(f"streamprune: task {task} gives {', '.join(kinds)} visuals; streamprune reads one video "
                         "file per question")
    if len(paths) != 1:
        raise ValueError(f"streamprune: task {task} gives {len(paths)} videos for one question; streamprune reads "
                         "exactly one")
    return os.fspath(paths[0])


def cut_at(text: str, until) -> str:
    """`text` up to the first of the stop strings `until` (a string or a list; empty ones ignored)."""
    stops = [until] if isinstance(until, str) else list(until or [])
    end = len(text)
    for s in stops:
        if isinstance(s, str) and s and s in text:
            end = min(end, text.index(s))
    return text[:end].strip()


@dataclass
class _Ask:
    """One question to ask on a played stream: at `time` (None: at the end), with `prompt`."""

    key: tuple                        # (request index, round)
    prompt: str
    gen: dict
    time: float | None = None
    meta: dict = field(default_factory=dict)


# ---------------------------------------------------------------- the model
class StreamPrune(lmms):
    """lmms-eval "simple" model: the task's text prompt + one video per request -> streamprune -> answer."""

    is_simple = True

    def __init__(self, pretrained: str = "Qwen/Qwen2-VL-2B-Instruct", budget=None, retention_ratio=None, memory=None,
                 method: str = "subspace", fps=1.0, max_frames=None, decoder_prune=False, protocol: str = "offline",
                 device=None, dtype=None, attn_implementation=None, batch_size=1, max_batch_size=None,
                 log_path="auto", seed=0, alpha=None, mode: str = "resprune", decode_headroom=None,
                 video_field: str = "video", time_field: str = "realtime", **kwargs) -> None:
        super().__init__()
        if kwargs:
            raise ValueError(f"streamprune: unknown model_args {', '.join(sorted(kwargs))} (see "
                             "streamprune.integrations.lmms_eval for the accepted ones)")
        from ..config import AskConfig

        self.budget = _opt_int("budget", budget)
        self.retention_ratio = _opt_float("retention_ratio", retention_ratio, hi=1.0)
        if self.budget is not None and self.retention_ratio is not None:
            raise ValueError("streamprune: give budget or retention_ratio, not both")
        self.memory_all = isinstance(memory, str) and memory.strip().lower() == "all"
        self.memory = None if self.memory_all else _opt_int("memory", memory)
        if not isinstance(method, str) or not method.strip():
            raise ValueError(f"streamprune: method must be a name, got {method!r}")
        self.full = method.strip().lower() == FULL
        if not isinstance(protocol, str) or protocol.strip().lower() not in PROTOCOLS:
            raise ValueError(f"streamprune: protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        self.protocol = protocol.strip().lower()
        bs = batch_size if not isinstance(batch_size, str) else batch_size.strip()
        if str(bs) not in ("1", "1.0"):
            raise ValueError(f"streamprune: batch_size must be 1 (videos are streamed one at a time), got {batch_size!r}")
        self.batch_size_per_gpu = 1
        self.video_field, self.time_field = str(video_field), str(time_field)
        self.seed = _opt_int("seed", seed, 0) or 0
        # every AskConfig field is checked once here, before the model loads (one-line ValueErrors)
        self.ask_fields = dict(
            method="uniform" if self.full else method.strip(), fps=_opt_float("fps", fps),
            max_frames=_opt_int("max_frames", max_frames), decoder_prune=_opt_bool("decoder_prune", decoder_prune),
            seed=self.seed, alpha=_opt_float("alpha", alpha, lo_open=False), mode=mode,
            decode_headroom=_opt_float("decode_headroom", decode_headroom, lo=1.0, lo_open=False))
        if self.protocol == "streaming" and self.ask_fields["max_frames"] is not None:
            raise ValueError("streamprune: max_frames spreads frames over a whole clip, which a stream does not "
                             "have; the streaming protocol samples at fps")
        probe_budget = self.budget or 1024
        self.method = AskConfig(budget=probe_budget, memory=max(probe_budget, self.memory or 0) or None,
                                **self.ask_fields).method
        self.ask_fields["method"] = self.method
        if self.full and (self.budget is not None or self.retention_ratio is not None or self.memory is not None):
            raise ValueError("streamprune: method=full gives every visual token to the LLM; it takes no budget, "
                             "retention_ratio or memory")
        if self.budget is None and self.retention_ratio is None and not self.full:
            self.budget = 1024
        if self.memory is not None and self.budget is not None and self.memory < self.budget:
            raise ValueError(f"streamprune: memory ({self.memory}) must be >= budget ({self.budget})")
        if _is_none(log_path):
            self.log_path = None
        elif isinstance(log_path, str) and log_path.strip().lower() == "auto":
            self.log_path = default_log_path()
        else:
            self.log_path = Path(os.fspath(log_path))

        from .. import load_model
        from ..models import check_attn, parse_device, parse_dtype

        parse_device(None if _is_none(device) else device), parse_dtype(None if _is_none(dtype) else dtype)
        check_attn(None if _is_none(attn_implementation) else attn_implementation)
        self.pretrained = str(pretrained)
        self.adapter = load_model(self.pretrained, device=None if _is_none(device) else device,
                                  dtype=None if _is_none(dtype) else dtype,
                                  attn_implementation=None if _is_none(attn_implementation) else attn_implementation)
        self._warned: set[str] = set()
        self._nlp_warm = False
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log.info("streamprune: per-sample log -> %s", self.log_path)

    # lmms-eval reads these
    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self):
        return self.adapter.device

    @property
    def tokenizer(self):
        return self.adapter.tokenizer

    # -------------------------------------------------------- configs and pipelines
    def _config(self, predicted: tuple[int, int] | None):
        """AskConfig for one stream; `predicted`: (its full visual token count, tokens per block), for
        retention / full / memory=all (memory and the full budget get one block of slack)."""
        from ..config import AskConfig, MIN_MEMORY

        kw = dict(self.ask_fields)
        n, slack = predicted if predicted is not None else (None, 0)
        if self.full:
            return AskConfig(budget=n + slack, memory=n + slack, **kw)
        budget = self.budget
        if budget is None:  # retention_ratio of the full count
            budget = max(1, round(self.retention_ratio * n))
        memory = self.memory
        if self.memory_all:
            memory = max(budget, n + slack)
        elif memory is None and n is not None:  # the default 4 x budget, but never above the whole video
            memory = max(budget, min(max(4 * budget, MIN_MEMORY), n + slack))
        return AskConfig(budget=budget, memory=memory, **kw)

    def _needs_count(self) -> bool:
        return self.full or self.memory_all or self.retention_ratio is not None

    def _pipeline(self, video: str):
        """(Pipeline, (predicted tokens, per block) or None) for a stream that starts with `video`."""
        from .. import Pipeline

        predicted = self.predict_tokens(video) if self._needs_count() else None
        pipe = Pipeline(self.adapter, self._config(predicted))
        if not self._nlp_warm:  # the noun tagger's one-off load is not part of the first question's TTFT
            pipe.warm()
            self._nlp_warm = True
        return pipe, predicted

    def _reader(self, video: str, *, start=None, max_frames=None):
        from ..pipeline import decode_size
        from ..readers import open_video

        f = self.ask_fields
        return open_video(str(video), fps=f["fps"], max_frames=max_frames, start=start,
                          size=decode_size(self.adapter, f["decode_headroom"]))

    def predict_tokens(self, video: str) -> tuple[int, int]:
        """(the video's visual token count at this sampling, tokens per block): tokens of its first block
        (encoded once, in a throwaway pipeline) x its blocks (sampled frames / frames per block)."""
        from .. import AskConfig, Pipeline
        from ..pipeline import expected_frames

        ad = self.adapter
        fpb = max(1, int(getattr(ad, "frames_per_block", 1)))
        f = self.ask_fields
        before = getattr(ad, "clip_frames", None)
        with self._reader(video, max_frames=f["max_frames"]) as rd:
            planned = getattr(rd, "planned_indices", None)
            n = len(planned) if planned else expected_frames(getattr(rd, "info", None), f["fps"], f["max_frames"])
            ad.clip_frames = n
            try:
                first = []
                for fr in rd:
                    first.append(fr)
                    if len(first) == fpb:
                        break
                if not first:
                    raise ValueError(f"streamprune: no frames could be read from {video}")
                probe = Pipeline(ad, AskConfig(budget=1, method="uniform", fps=f["fps"], thumbnails=0))
                probe.push_frames(first)
                probe.flush()
            finally:
                ad.clip_frames = before
        per_block = probe.tokens_seen
        n = n or len(first)
        return per_block * math.ceil(n / fpb), per_block

    # -------------------------------------------------------- asking and logging
    def _answer(self, pipe, ask: _Ask, flush: bool):
        gen = dict(ask.gen or {})
        self._check_gen(gen)
        max_new = _opt_int("max_new_tokens", gen.get("max_new_tokens", 128)) or 128
        ans = pipe.ask(ask.prompt, max_new_tokens=max_new, flush=flush)
        return cut_at(ans.text, gen.get("until")), ans

    def _check_gen(self, gen: dict) -> None:
        sampled = bool(gen.get("do_sample")) or float(gen.get("temperature") or 0) > 0 or int(gen.get("num_beams") or 1) > 1
        if sampled and "sampling" not in self._warned:
            self._warned.add("sampling")
            log.warning("streamprune decodes greedily: the task's sampling / beam settings are ignored")

    def _record(self, ask: _Ask, text: str, ans, predicted: tuple[int, int] | None, video: str) -> dict:
        t = ans.timings
        seen = int(ans.tokens_seen)
        new_ids = self.adapter.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        row = {
            **ask.meta, "protocol": self.protocol, "video": video, "query_time": ask.time,
            "model": self.pretrained, "method": FULL if self.full else self.method, "budget": ans.budget,
            "memory": ans.memory, "retention_target": 1.0 if self.full else self.retention_ratio,
            "tokens_predicted": predicted[0] if predicted else None, "tokens_seen": seen,
            "tokens_kept": int(ans.tokens_kept),
            "tokens_to_llm": int(ans.tokens_to_llm), "retention": ans.tokens_to_llm / seen if seen else math.nan,
            "frames": int(ans.frames), "span": list(ans.span), "kept_span": list(ans.kept_span),
            "ttft_s": t.get("ttft"), "prefill_s": t.get("prefill"), "generate_s": t.get("generate"),
            "question_s": t.get("question"), "decode_s": t.get("decode"), "encode_s": t.get("encode"),
            "select_s": t.get("select"), "peak_memory_mb": round(float(ans.peak_memory_mb), 1),
            "new_tokens": len(new_ids), "decoder_kept": ans.decoder_kept or None, "text": text,
        }
        self._log_row(row)
        return row

    def _log_row(self, row: dict) -> None:
        if self.log_path is not None:
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row, default=str) + "\n")

    def _result(self, text: str, row: dict, prompt: str):
        """lmms-eval's GenerationResult: the text, and the tokens in (prompt + visual) and out."""
        try:
            before, after = self.adapter.render_prompt(prompt)
            n_text = len(before) + len(after)
        except (ValueError, TypeError):
            n_text = 0
        return GenerationResult(text=text, token_counts=TokenCounts(
            input_tokens=n_text + row["tokens_to_llm"], output_tokens=row["new_tokens"]))

    def _doc(self, task, split, doc_id):
        return self.task_dict[task][split][doc_id]

    # -------------------------------------------------------- playing streams
    def _frames(self, pipe, video: str, *, start=None, max_frames=None):
        """Frames of `video` (from `start`), decode time added to pipe.timings; clip length set for the adapter."""
        from ..pipeline import expected_frames

        ad = self.adapter
        before = getattr(ad, "clip_frames", None)
        with self._reader(video, start=start, max_frames=max_frames) as rd:
            planned = getattr(rd, "planned_indices", None)
            ad.clip_frames = len(planned) if planned else expected_frames(getattr(rd, "info", None),
                                                                          self.ask_fields["fps"], max_frames)
            it = iter(rd)
            try:
                while True:
                    t = time.perf_counter()
                    fr = next(it, None)
                    pipe.timings["decode"] += time.perf_counter() - t
                    if fr is None:
                        return
                    yield fr
            finally:
                ad.clip_frames = before

    def play(self, pipe, video: str, asks: list[_Ask], answer: Callable, *, start=None, after=None,
             last: bool = True) -> float | None:
        """Play `video` (from `start`; frames at or before `after` skipped: already seen) through `pipe`, asking
        each of `asks` (sorted by time) once playback passes its time, on the memory as it is then (full blocks
        only); the rest at the end (flushed when `last`). answer(ask, flush). Returns the last frame's time."""
        pending = sorted(asks, key=lambda a: math.inf if a.time is None else a.time)
        t_last = after
        for fr in self._frames(pipe, video, start=start):
            if after is not None and fr.time <= after + _EPS:
                continue
            while pending and pending[0].time is not None and fr.time > pending[0].time + _EPS and pipe.blocks > 0:
                answer(pending.pop(0), False)
            pipe.push_frames([fr])
            t_last = fr.time
        if last or (pending and pipe.blocks == 0):
            pipe.flush()
        for a in pending:
            answer(a, False)
        return t_last

    # -------------------------------------------------------- lmms-eval entry points
    def loglikelihood(self, requests):
        raise NotImplementedError("streamprune generates answers: loglikelihood requests (lmms-eval's "
                                  "multiple_choice output type) are not supported; use a generate_until task")

    def generate_until(self, requests) -> list:
        """One answer per request (the task's prompt, one video), in the requests' order."""
        items = []  # (request index, video, doc, prompt, gen)
        for i, req in enumerate(requests):
            ctx, gen, doc_to_visual, doc_id, task, split = req.args
            doc = self._doc(task, split, doc_id)
            video = video_of(doc_to_visual(doc), task)
            items.append((i, video, doc, ctx, gen, {"task": task, "doc_id": doc_id, "split": split}))
        out: list = [None] * len(requests)
        groups = self._groups(items)
        from tqdm import tqdm

        bar = tqdm(total=len(requests), desc="streamprune", disable=self.rank != 0)
        for video, members in groups:
            try:
                self._run_group(video, members, out, bar)
            except ValueError as e:  # a missing or unreadable video (ReaderError): logged, its questions unanswered
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                log.error("streamprune: %s: %s (its %d question(s) get an empty answer)", video, reason, len(members))
                for a in members:
                    if out[a.key[0]] is None:
                        self._log_row({**a.meta, "protocol": self.protocol, "video": video, "error": reason})
                        out[a.key[0]] = GenerationResult(text="", token_counts=None)
                        bar.update(1)
        bar.close()
        return out

    def _run_group(self, video: str, members: list[_Ask], out: list, bar) -> None:
        pipe, predicted = self._pipeline(video)

        def answer(a: _Ask, flush: bool):
            text, ans = self._answer(pipe, a, flush)
            row = self._record(a, text, ans, predicted, video)
            out[a.key[0]] = self._result(text, row, a.prompt)
            bar.update(1)

        if self.protocol == "offline":
            from ..pipeline import run_video

            run_video(pipe, video)
            for a in members:
                answer(a, True)
        else:
            self.play(pipe, video, members, answer)

    def _groups(self, items) -> list[tuple[str, list[_Ask]]]:
        """[(video to play, its questions)]: offline, per video file; streaming, per source video when the
        documents give one and a query time (the group's longest clip is played), else per clip."""
        groups: dict = {}
        for i, video, doc, ctx, gen, meta in items:
            t = None
            key = ("file", video)
            if self.protocol == "streaming":
                src, qt = doc.get(self.video_field), doc.get(self.time_field)
                if src is not None and qt is not None:
                    t = _opt_float(self.time_field, qt, lo_open=False)
                    key = ("source", str(src))
            groups.setdefault(key, []).append((video, _Ask((i, 0), ctx, gen, t, meta)))
        out = []
        for members in groups.values():
            longest = max(members, key=lambda m: -1.0 if m[1].time is None else m[1].time)[0]
            out.append((longest, [a for _, a in members]))
        return out

    def generate_until_multi_round(self, requests) -> list:
        """Multi-round requests (ovo_forward): each round's clip and prompt from the task's doc_to_text; one
        list of answers per request. Streaming: one Pipeline per request, each round's clip read from where the
        last one stopped; offline: each round's clip read whole, in a fresh Pipeline."""
        from tqdm import tqdm

        out = []
        for req in tqdm(requests, desc="streamprune (multi-round)", disable=self.rank != 0):
            ctx, gen, doc_to_visual, doc_to_text, doc_id, task, split = req.args
            doc = self._doc(task, split, doc_id)
            video, prompt = video_of(doc_to_visual(doc), task), ctx
            rounds: list[str] = []
            pipe, predicted, t_last, t0 = None, None, None, None
            for r in range(10**6):
                if r > 0:
                    visuals, prompt, terminal, _, _ = doc_to_text(doc, previous_output=list(rounds), round_idx=r,
                                                                   previous_round_info=None)
                    if terminal:
                        break
                    video = video_of(visuals, task)
                meta = {"task": task, "doc_id": doc_id, "split": split, "round": r}
                a = _Ask((0, r), prompt, dict(gen), None, meta)
                got = []
                if self.protocol == "offline" or pipe is None:
                    pipe, predicted = self._pipeline(video)
                    t_last = None
                if self.protocol == "offline":
                    from ..pipeline import run_video

                    run_video(pipe, video)
                    got.append(self._answer(pipe, a, True))
                else:
                    fps = self.ask_fields["fps"]
                    start = None
                    if t_last is not None:  # the next sampling tick after what was already seen
                        start = t0 + (round((t_last - t0) * fps) + 1) / fps
                    t_now = self.play(pipe, video, [a], lambda a, flush: got.append(self._answer(pipe, a, flush)),
                                      start=start, after=t_last, last=False)
                    if t0 is None:
                        t0 = float(pipe.t0) if pipe.t0 is not None else 0.0
                    t_last = t_now if t_now is not None else t_last
                text, ans = got[0]
                if self.protocol == "streaming":
                    a.time = t_last  # playback reached the end of this round's clip: the question's time
                self._record(a, text, ans, predicted, video)
                rounds.append(text)
            out.append(rounds)
        return out
