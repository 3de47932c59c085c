"""`streamprune bench --suite qa`: multiple-choice video QA accuracy per method and budget, relative to
the full-token run of the same model (every token to the LLM), with TTFT, tokens/s and peak memory.

Datasets are read from local folders `DATA/<name>/` holding the published download as is; each loader
cites where its layout comes from. A missing folder, annotation file or model is one clear line.
`write_tiny_dataset` writes each layout with generated clips (tests, smoke runs).

Two variants per unit:
- offline: the memory is rebuilt per question over the whole video (or MVBench's [start, end] window);
- streaming: each video is played once through one Pipeline; each question is asked when the stream reaches
  its time (`question_time`, MVBench's `end`; none given: at the end) on the live memory as it is then
  (full blocks only: a half-filled Qwen block is not flushed early, so no token is later than that time).
  Each question's time asked, the stream span and the kept tokens' span are recorded.
The full-token arm is skipped, with the reason in the row, when the visual tokens plus the prompt would not
fit the LLM's context (or the GPU runs out of memory).
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

from .runner import Unit

log = logging.getLogger(__name__)

DATASETS = ("videomme", "mvbench", "mlvu", "egoschema", "longvideobench")
LETTERS = "ABCDEFGH"
FULL_BUDGET = 10**7  # "full": every token reaches the LLM (uniform keeps all when the budget exceeds the stream)
TIME_KEY = "question_time"  # optional per-question field (seconds): when to ask in the streaming variant


@dataclass
class Item:
    qid: str
    video: Path
    question: str
    options: list[str]
    answer: int                          # index into options
    duration: str | None = None          # the dataset's duration category (Video-MME, LongVideoBench)
    time: float | None = None            # streaming: ask when the stream reaches this time (None: at the end)
    window: tuple[float, float] | None = None  # offline: read only this time range (MVBench start/end)


# ------------------------------------------------------------------ loaders
def _load_json(p: Path):
    try:
        if p.suffix == ".jsonl":
            return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()]
        return json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"qa: cannot read {p}: {str(e).splitlines()[0]}") from None


def _load_parquet(p: Path, name: str) -> list[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(f"{name}: reading {p.name} needs pyarrow (pip install pyarrow)") from None
    return pq.read_table(p).to_pylist()


def _field(r: dict, key: str, name: str, where: str):
    if key not in r:
        raise ValueError(f"{name}: field {key!r} missing in {where}")
    return r[key]


def _qtime(r: dict) -> float | None:
    t = r.get(TIME_KEY)
    return None if t is None else float(t)


def _strip_letter(opt: str) -> str:
    return re.sub(r"^\s*\(?[A-H][\.\):]\s*", "", str(opt))


def _first_existing(*paths: Path) -> Path:
    return next((p for p in paths if p.exists()), paths[0])


def _videomme(base: Path) -> list[Item]:
    # Layout of huggingface.co/datasets/lmms-lab/Video-MME: videomme/test-00000-of-00001.parquet (fields video_id,
    # duration short|medium|long, domain, sub_category, url, videoID, question_id, task_type, question,
    # options ["A. ..", ..], answer "A"); videos_chunked_*.zip unzip to data/<videoID>.mp4 (lmms-eval
    # tasks/videomme/utils.py also tries .MP4 and .mkv). A JSON/JSONL export of the table is accepted too.
    files = sorted(base.glob("videomme/test*.parquet")) or sorted(base.glob("test*.parquet"))
    files = files or sorted(base.glob("videomme/test*.json*")) + sorted(base.glob("test*.json*"))
    if not files:
        raise ValueError(f"videomme: no annotation file videomme/test-*.parquet under {base}")
    recs = []
    for f in files:
        recs += _load_parquet(f, "videomme") if f.suffix == ".parquet" else _load_json(f)
    items = []
    for r in recs:
        vid = str(_field(r, "videoID", "videomme", "the annotation"))
        ans = str(_field(r, "answer", "videomme", "the annotation")).strip()[:1]
        opts = [_strip_letter(o) for o in r["options"]]
        if ans not in LETTERS[: len(opts)]:
            raise ValueError(f"videomme: answer {ans!r} of question {r.get('question_id')} is not an option letter")
        video = _first_existing(*(base / "data" / f"{vid}{ext}" for ext in (".mp4", ".MP4", ".mkv")))
        items.append(Item(str(r["question_id"]), video, r["question"], opts, LETTERS.index(ans),
                          duration=r.get("duration"), time=_qtime(r)))
    return items


# MVBench (huggingface.co/datasets/OpenGVLab/MVBench; the task table of Ask-Anything video_chat2/mvbench.ipynb,
# reused by lmms-eval tasks/mvbench): json/<task>.json [{video, question, candidates, answer <text>, start?, end?}],
# videos under video/<source folder>/ per task (zips in video/ unpacked in place). "bound" tasks carry start/end
# (seconds); episodic_reasoning points at frame folders (tvqa/frames_fps3_hq), which this suite does not read.
MVBENCH_TASKS = {  # task -> (folder under video/, has start/end)
    "action_sequence": ("star/Charades_v1_480", True), "action_prediction": ("star/Charades_v1_480", True),
    "action_antonym": ("ssv2_video", False), "fine_grained_action": ("Moments_in_Time_Raw/videos", False),
    "unexpected_action": ("FunQA_test/test", False), "object_existence": ("clevrer/video_validation", False),
    "object_interaction": ("star/Charades_v1_480", True), "object_shuffle": ("perception/videos", False),
    "moving_direction": ("clevrer/video_validation", False), "action_localization": ("sta/sta_video", True),
    "scene_transition": ("scene_qa/video", False), "action_count": ("perception/videos", False),
    "moving_count": ("clevrer/video_validation", False), "moving_attribute": ("clevrer/video_validation", False),
    "state_change": ("perception/videos", False), "fine_grained_pose": ("nturgbd", False),
    "character_order": ("perception/videos", False), "egocentric_navigation": ("vlnqa", False),
    "episodic_reasoning": ("tvqa/frames_fps3_hq", True), "counterfactual_inference": ("clevrer/video_validation", False),
}
FRAME_TASKS = {"episodic_reasoning"}


def _answer_index(r: dict, name: str, where: str) -> tuple[list[str], int]:
    opts = [str(c) for c in _field(r, "candidates", name, where)]
    ans = str(_field(r, "answer", name, where))
    if ans not in opts:
        raise ValueError(f"{name}: answer {ans!r} not among the candidates in {where}")
    return opts, opts.index(ans)


def _mvbench(base: Path) -> list[Item]:
    files = sorted((base / "json").glob("*.json"))
    if not files:
        raise ValueError(f"mvbench: no annotation files json/*.json under {base}")
    items = []
    for f in files:
        task = f.stem
        if task in FRAME_TASKS:
            log.warning("mvbench: skipping %s (its videos are frame folders)", task)
            continue
        folder, bound = MVBENCH_TASKS.get(task, (task, False))
        for i, r in enumerate(_load_json(f)):
            opts, ans = _answer_index(r, "mvbench", f"{f.name} item {i}")
            name = str(r["video"])
            video = _first_existing(base / "video" / folder / name, base / "video" / task / name, base / "video" / name)
            window = (float(r["start"]), float(r["end"])) if bound and "start" in r and "end" in r else None
            t = _qtime(r)
            items.append(Item(f"{task}/{i}", video, r["question"], opts, ans,
                              time=t if t is not None else (window[1] if window else None), window=window))
    return items


def _mlvu(base: Path) -> list[Item]:
    # MLVU dev set (huggingface.co/datasets/MLVU/MVLU, github.com/JUNJIE99/MLVU): MLVU/json/<n>_<task>.json
    # [{video, duration (s), question, candidates, answer <text>, question_type}] and MLVU/video/<n>_<task>/<video>
    # (task folders as in VideoMind videomind/dataset/sub_classes/mlvu.py). 8_sub_scene / 9_summary are open-ended
    # (no candidates) and are skipped. DATA/mlvu/ may be the repo root (holding MLVU/) or MLVU/ itself.
    root = base / "MLVU" if (base / "MLVU" / "json").is_dir() else base
    files = sorted((root / "json").glob("*.json"))
    if not files:
        raise ValueError(f"mlvu: no annotation files MLVU/json/*.json under {base}")
    items = []
    for f in files:
        for i, r in enumerate(_load_json(f)):
            if "candidates" not in r:
                continue  # open-ended task
            opts, ans = _answer_index(r, "mlvu", f"{f.name} item {i}")
            name = str(r["video"])
            video = _first_existing(root / "video" / f.stem / name, root / "video" / name)
            items.append(Item(f"{f.stem}/{i}", video, r["question"], opts, ans, time=_qtime(r)))
    return items


def _egoschema(base: Path) -> list[Item]:
    # github.com/egoschema/EgoSchema: questions.json [{q_uid, google_drive_id, question, option 0 .. option 4}],
    # subset_answers.json {q_uid: int} (answers of the public 500-question subset), videos/<q_uid>.mp4
    # (the layout the LLaVA-style eval scripts point --video-folder / --gt-answers-file at).
    q, a = base / "questions.json", base / "subset_answers.json"
    for p in (q, a):
        if not p.is_file():
            raise ValueError(f"egoschema: annotation file {p} not found")
    answers = _load_json(a)
    items = []
    for r in _load_json(q):
        uid = str(_field(r, "q_uid", "egoschema", q.name))
        if uid not in answers:
            continue  # only the public subset has answers
        opts = [str(r[f"option {i}"]) for i in range(5)]
        items.append(Item(uid, base / "videos" / f"{uid}.mp4", r["question"], opts, int(answers[uid]), time=_qtime(r)))
    return items


def _longvideobench(base: Path) -> list[Item]:
    # huggingface.co/datasets/longvideobench/LongVideoBench and github.com/longvideobench/LongVideoBench
    # (longvideobench/longvideobench_dataset.py): lvb_val.json [{id, video_id, video_path, question, candidates,
    # correct_choice <int>, duration, duration_group (15|60|600|3600), subtitle_path, ...}], videos/<video_path>
    # from videos.tar. lvb_test_wo_gt.json has no answers and is not read.
    p = base / "lvb_val.json"
    if not p.is_file():
        raise ValueError(f"longvideobench: annotation file {p} not found")
    items = []
    for i, r in enumerate(_load_json(p)):
        opts = [str(c) for c in _field(r, "candidates", "longvideobench", f"lvb_val.json item {i}")]
        ans = int(_field(r, "correct_choice", "longvideobench", f"lvb_val.json item {i}"))
        dg = r.get("duration_group")
        items.append(Item(str(r.get("id", i)), base / "videos" / str(r["video_path"]), r["question"], opts, ans,
                          duration=None if dg is None else str(dg), time=_qtime(r)))
    return items


_LOADERS = {"videomme": _videomme, "mvbench": _mvbench, "mlvu": _mlvu, "egoschema": _egoschema,
            "longvideobench": _longvideobench}


def load_dataset(name: str, root) -> list[Item]:
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    base = Path(root) / name
    if not base.is_dir():
        raise ValueError(f"qa: dataset folder {base} not found")
    items = _LOADERS[name](base)
    if not items:
        raise ValueError(f"qa: {name} has no multiple-choice questions with answers")
    for it in items:
        if not 0 <= it.answer < len(it.options) or len(it.options) > len(LETTERS):
            raise ValueError(f"qa: {name} question {it.qid}: answer {it.answer} outside its {len(it.options)} options")
    return items


# ------------------------------------------------------------------ prompts and scoring
def prompt(item: Item) -> str:
    opts = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(item.options))
    return f"{item.question}\n{opts}\nAnswer with the option's letter from the given choices directly."


def parse_choice(text: str, n: int) -> int | None:
    """Index of the first option letter in the answer (A. / (B) / 'C'), None when there is none."""
    m = re.search(r"\b([A-H])\b", text.strip())
    if m and LETTERS.index(m.group(1)) < n:
        return LETTERS.index(m.group(1))
    return None


# ------------------------------------------------------------------ write a tiny dataset (tests, smoke runs)
def write_tiny_dataset(root, name: str, n_videos: int = 2, seconds: float = 2.0) -> Path:
    """Generated clips + annotations in `name`'s published layout under root/name. The second question of each
    video is timed at mid-clip (MVBench: its `end`; the others: `question_time`), the first at the end."""
    from .streams import synthesize_clip

    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    base = Path(root) / name
    mid = round(seconds / 2, 3)
    qs = [("What colour is the moving square?", ["yellow", "red", "blue", "green"], 0, None),
          ("What happens in the middle of the clip?", ["nothing", "a scene cut", "it ends", "a fade"], 1, mid)]
    clip = lambda path: synthesize_clip(path, seconds=seconds, fps=8, size=(112, 112))
    timed = lambda t: {} if t is None else {TIME_KEY: t}
    vids = [f"clip{v}" for v in range(n_videos)]
    if name == "videomme":  # the parquet table exported as JSON (the loader reads either)
        recs = []
        for v, vid in enumerate(vids):
            clip(base / "data" / f"{vid}.mp4")
            recs += [{"video_id": f"{v:03d}", "duration": "short", "domain": "Life Record", "videoID": vid,
                      "question_id": f"{v:03d}-{j + 1}", "task_type": "Action Recognition", "question": q,
                      "options": [f"{LETTERS[i]}. {x}" for i, x in enumerate(o)], "answer": LETTERS[a], **timed(t)}
                     for j, (q, o, a, t) in enumerate(qs)]
        (base / "videomme").mkdir(parents=True, exist_ok=True)
        (base / "videomme" / "test-00000-of-00001.json").write_text(json.dumps(recs))
    elif name == "mvbench":
        task, (folder, _) = "action_sequence", MVBENCH_TASKS["action_sequence"]
        recs = []
        for vid in vids:
            clip(base / "video" / folder / f"{vid}.mp4")
            recs += [{"video": f"{vid}.mp4", "question": q, "candidates": o, "answer": o[a],
                      "start": 0.0, "end": t if t is not None else seconds} for q, o, a, t in qs]
        (base / "json").mkdir(parents=True, exist_ok=True)
        (base / "json" / f"{task}.json").write_text(json.dumps(recs))
    elif name == "mlvu":
        m = base / "MLVU"
        recs = []
        for vid in vids:
            clip(m / "video" / "1_plotQA" / f"{vid}.mp4")
            recs += [{"video": f"{vid}.mp4", "duration": seconds, "question": q, "candidates": o, "answer": o[a],
                      "question_type": "plotQA", **timed(t)} for q, o, a, t in qs]
        (m / "json").mkdir(parents=True, exist_ok=True)
        (m / "json" / "1_plotQA.json").write_text(json.dumps(recs))
        (m / "json" / "9_summary.json").write_text(json.dumps(  # open-ended: must be skipped
            [{"video": f"{vids[0]}.mp4", "duration": seconds, "question": "Summarise.", "answer": "a clip",
              "question_type": "summary"}]))
    elif name == "egoschema":
        recs, ans = [], {}
        for v, _ in enumerate(vids):
            for j, (q, o, a, t) in enumerate(qs):
                uid = f"uid{v}{j}"
                clip(base / "videos" / f"{uid}.mp4")
                recs.append({"q_uid": uid, "google_drive_id": "-", "question": q,
                             **{f"option {i}": x for i, x in enumerate(o + ["other"])}, **timed(t)})
                ans[uid] = a
        recs.append({"q_uid": "no-answer", "question": "?", **{f"option {i}": "x" for i in range(5)}})
        base.mkdir(parents=True, exist_ok=True)
        (base / "questions.json").write_text(json.dumps(recs))
        (base / "subset_answers.json").write_text(json.dumps(ans))
    else:  # longvideobench
        recs = []
        for v, vid in enumerate(vids):
            clip(base / "videos" / f"{vid}.mp4")
            recs += [{"video_id": vid, "id": f"{vid}_{j}", "video_path": f"{vid}.mp4", "question": q, "candidates": o,
                      "correct_choice": a, "duration": seconds, "duration_group": 15, "question_category": "S2E",
                      "subtitle_path": f"{vid}_en.json", **timed(t)} for j, (q, o, a, t) in enumerate(qs)]
        base.mkdir(parents=True, exist_ok=True)
        (base / "lvb_val.json").write_text(json.dumps(recs))
    return base


# ------------------------------------------------------------------ run
_ADAPTER: dict = {}


def _adapter(model: str, device, dtype, attn):
    key = (model, device, dtype, attn)
    if key not in _ADAPTER:
        from ..models import load_model

        _ADAPTER.clear()
        _ADAPTER[key] = load_model(model, device=device, dtype=dtype, attn_implementation=attn)
    return _ADAPTER[key]


class DoesNotFit(ValueError):
    """The full-token arm cannot run: the visual tokens would not fit the LLM (reason in the message)."""


def context_limit(adapter) -> int | None:
    """The LLM's context length in tokens (max_position_embeddings), None when unknown."""
    cfg = getattr(getattr(adapter, "model", None), "config", None)
    tc = getattr(cfg, "text_config", cfg)
    n = getattr(tc, "max_position_embeddings", None)
    return int(n) if n else None


def _check_fits(pipe, adapter, text: str, limit: int | None, max_new: int) -> None:
    if limit is None:
        return
    n_vis = len(pipe.selector.memory)
    n_txt = len(adapter.tokenizer(text, add_special_tokens=False).input_ids) + 32  # + chat template
    if n_vis + n_txt + max_new > limit:
        raise DoesNotFit(f"{n_vis} visual + {n_txt} text + {max_new} new tokens exceed the LLM context of {limit}")


def _frames(video: Path, fps: float, max_frames, window=None):
    from ..readers import open_video

    kw = {} if window is None else {"start": window[0], "end": window[1]}
    return open_video(str(video), fps=fps, max_frames=max_frames, **kw)


def stream_questions(pipe, frames, items: list[Item], ask) -> list[tuple[Item, object, float | None, float]]:
    """Play `frames` through `pipe` once; ask each item when the stream passes its time (None: at the end).

    ask(pipe, item, flush) -> Answer. Returns (item, answer, time asked, latest token time in the memory then)."""
    order = sorted(range(len(items)), key=lambda i: (math.inf if items[i].time is None else items[i].time, i))
    pending = [items[i] for i in order]
    out = []

    def ask_now(it, flush):
        ans = ask(pipe, it, flush)
        mem = pipe.selector.memory
        latest = float(mem.times.max()) if len(mem) else math.nan
        out.append((it, ans, it.time, latest))

    for fr in frames:
        while pending and pending[0].time is not None and fr.time > pending[0].time and pipe.blocks > 0:
            ask_now(pending.pop(0), False)  # memory as it is now: full blocks only, all at or before the time
        pipe.push_frames([fr])
    for it in pending:
        ask_now(it, True)
    by_item = {id(r[0]): r for r in out}
    return [by_item[id(it)] for it in items]


def run_unit_params(p: dict) -> list[dict]:
    """One (dataset, method, budget, streaming) unit over the dataset's first `limit` questions."""
    from ..pipeline import AskConfig, Pipeline

    ad = _adapter(p["model"], p["device"], p["dtype"], p["attn"])
    items = load_dataset(p["dataset"], p["data"])[: p["limit"]]
    full = p["budget"] == "full"
    budget = FULL_BUDGET if full else int(p["budget"])
    cfg = AskConfig(budget=budget, memory=budget if full else None, method="uniform" if full else p["method"],
                    fps=p["fps"], max_frames=p["max_frames"], max_new_tokens=p["max_new_tokens"], seed=0)
    limit = p.get("full_max_tokens") or context_limit(ad)
    row = {"dataset": p["dataset"], "method": "full" if full else p["method"], "budget": p["budget"],
           "streaming": p["streaming"], "model": p["model"], "n": len(items)}
    recs: list[dict] = []
    peak = 0.0

    def ask(pipe, it, flush):
        text = prompt(it)
        if full:
            if flush:
                pipe.flush()
            _check_fits(pipe, ad, text, limit, cfg.max_new_tokens)
        return pipe.ask(text, flush=flush)

    by_video: dict[Path, list[Item]] = {}
    for it in items:
        by_video.setdefault(it.video, []).append(it)
    try:
        for video, its in by_video.items():
            if not video.is_file():
                raise ValueError(f"qa: video {video} not found")
            if p["streaming"]:
                pipe = Pipeline(ad, cfg)
                with _frames(video, cfg.fps, cfg.max_frames) as rd:
                    got = stream_questions(pipe, rd, its, ask)
            else:
                got = []
                for it in its:
                    pipe = Pipeline(ad, cfg)
                    with _frames(video, cfg.fps, cfg.max_frames, it.window) as rd:
                        pipe.push_frames(rd)
                    got.append((it, ask(pipe, it, True), None, math.nan))
            for it, ans, asked_at, latest in got:
                recs.append(_record(ad, it, ans, asked_at, latest))
                peak = max(peak, ans.peak_memory_mb)
    except DoesNotFit as e:
        return [{**row, "accuracy": math.nan, "skipped": f"full-token arm does not fit: {e}"}]
    except Exception as e:  # only a GPU out-of-memory is a recorded skip
        if not full or "out of memory" not in str(e).lower():
            raise
        return [{**row, "accuracy": math.nan, "skipped": "full-token arm does not fit: out of GPU memory"}]
    return [{**row, **_summary(recs), "peak_mb": peak, "questions": recs}]


def _record(ad, it: Item, ans, asked_at, latest) -> dict:
    choice = parse_choice(ans.text, len(it.options))
    n_gen = len(ad.tokenizer(ans.text, add_special_tokens=False).input_ids) if ans.text else 0
    gen_s = ans.timings.get("generate", 0.0)
    return {"qid": it.qid, "duration": it.duration, "correct": int(choice == it.answer), "choice": choice,
            "asked_at": asked_at, "span": list(ans.span), "kept_span": list(ans.kept_span),
            "memory_latest": latest, "tokens_to_llm": ans.tokens_to_llm, "ttft_s": ans.timings.get("ttft", math.nan),
            "tokens_per_s": n_gen / gen_s if gen_s > 0 else math.nan}


def _summary(recs: list[dict]) -> dict:
    mean = lambda k: sum(r[k] for r in recs) / len(recs) if recs else math.nan
    by_dur: dict[str, list[int]] = {}
    for r in recs:
        if r["duration"] is not None:
            c = by_dur.setdefault(str(r["duration"]), [0, 0])
            c[0] += r["correct"]
            c[1] += 1
    out = {"correct": sum(r["correct"] for r in recs), "accuracy": mean("correct"),
           "tokens_to_llm": mean("tokens_to_llm"), "ttft_s": mean("ttft_s"), "tokens_per_s": mean("tokens_per_s")}
    if by_dur:
        out["accuracy_by_duration"] = {k: c / n for k, (c, n) in sorted(by_dur.items())}
    return out


def add_relative(rows: list[dict]) -> list[dict]:
    """relative = accuracy / accuracy of the full-token run (same dataset, model and streaming flag); NaN, with
    `relative_note` saying why, when that run is missing, skipped or scored 0."""
    key = lambda r: (r.get("dataset"), r.get("model"), r.get("streaming"))
    full = {key(r): r for r in rows if r.get("budget") == "full"}
    for r in rows:
        f = full.get(key(r))
        acc = f.get("accuracy") if f else None
        if f is None:
            r["relative"], r["relative_note"] = math.nan, "no full-token run"
        elif f.get("skipped"):
            r["relative"], r["relative_note"] = math.nan, f["skipped"]
        elif not acc or not math.isfinite(acc):
            r["relative"], r["relative_note"] = math.nan, "full-token accuracy is 0"
        else:
            r["relative"] = r["accuracy"] / acc
            r.pop("relative_note", None)
    return rows


def plan_from_args(args) -> list[Unit]:
    from .suites import _csv

    data = getattr(args, "data", None)
    if not data:
        raise ValueError("qa: pass --data DIR, the folder holding videomme/, mvbench/, mlvu/, egoschema/, longvideobench/")
    names = _csv(getattr(args, "datasets", None)) or [d for d in DATASETS if (Path(data) / d).is_dir()]
    if not names:
        raise ValueError(f"qa: no dataset folder ({', '.join(DATASETS)}) under {data}")
    for d in names:
        load_dataset(d, data)  # fail fast, one line
    _adapter(args.model, args.device, args.dtype, args.attn)  # fail fast on a missing model, one line
    quick = bool(getattr(args, "quick", False))
    methods = _csv(getattr(args, "methods", None)) or (["ours", "random"] if quick else
                                                       ["ours", "uniform", "random", "divprune", "dpp"])
    budgets = _csv(getattr(args, "budgets", None), int) or ([16] if quick else [64, 256, 1024])
    limit = getattr(args, "limit", None) or (4 if quick else 10**9)
    common = {"model": args.model, "device": args.device, "dtype": args.dtype, "attn": args.attn, "data": str(data),
              "limit": int(limit), "fps": float(args.fps), "max_frames": args.max_frames or (8 if quick else 64),
              "max_new_tokens": 8}
    units = []
    for d in names:
        for streaming in (False, True):
            tag = "stream" if streaming else "offline"
            units.append(Unit(f"qa/{d}/{tag}/full", {**common, "dataset": d, "method": "full", "budget": "full",
                                                       "streaming": streaming}))
            for m in methods:
                for k in budgets:
                    units.append(Unit(f"qa/{d}/{tag}/{m}/k{k}", {**common, "dataset": d, "method": m, "budget": int(k),
                                                                   "streaming": streaming}))
    return units


def make_runner(args):
    return lambda u: run_unit_params(u.params)
