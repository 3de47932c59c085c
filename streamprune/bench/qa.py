"""`streamprune bench --suite qa`: multiple-choice video QA accuracy per method and budget, relative to
the full-token run of the same model, with TTFT, tokens/s and peak memory.

Datasets are read from local folders in their published layouts (annotation file + video folder):

    videomme/        videomme/test-*.parquet (or test.json / .jsonl with the same fields) + data/<videoID>.mp4
                     fields: videoID, question_id, question, options ["A. ..", ...], answer "A"
    mvbench/         json/<task>.json [{video, question, candidates [..], answer <text>}] + video/<task>/<video>
    mlvu/            json/<n>_<task>.json [{video, question, candidates, answer <text>}] + video/<n>_<task>/<video>
    egoschema/       questions.json [{q_uid, question, option 0..option 4}] + subset_answers.json {q_uid: int}
                     + videos/<q_uid>.mp4
    longvideobench/  lvb_val.json [{id, video_path, question, candidates, correct_choice int}] + videos/<video_path>

(MVBench's real task folders differ per task; videos are looked up under video/<task>/ then video/.) A
missing folder or model is one clear line. `write_tiny_dataset` writes each layout with generated clips.
The streaming variant feeds each video once through one Pipeline and asks all its questions while the
stream is open (questions unknown during playback); the plain variant rebuilds the memory per question.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from .runner import Unit

DATASETS = ("videomme", "mvbench", "mlvu", "egoschema", "longvideobench")
LETTERS = "ABCDEFGH"
FULL_BUDGET = 10**7  # "full": every token reaches the LLM (uniform keeps all when the budget exceeds the stream)


@dataclass
class Item:
    qid: str
    video: Path
    question: str
    options: list[str]
    answer: int   # index into options


# ------------------------------------------------------------------ loaders
def _load_json(p: Path):
    if p.suffix == ".jsonl":
        return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()]
    return json.loads(p.read_text())


def _strip_letter(opt: str) -> str:
    return re.sub(r"^\s*\(?[A-H][\.\):]\s*", "", str(opt))


def _videomme(root: Path) -> list[Item]:
    cands = sorted(root.glob("videomme/test*.json*")) + sorted(root.glob("videomme/test*.parquet"))
    if not cands:
        raise ValueError(f"videomme: no videomme/test*.parquet|json under {root}")
    p = cands[0]
    if p.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError("videomme: reading the parquet file needs pyarrow (or convert it to test.json)") from None
        recs = pq.read_table(p).to_pylist()
    else:
        recs = _load_json(p)
    items = []
    for r in recs:
        opts = [_strip_letter(o) for o in r["options"]]
        items.append(Item(str(r["question_id"]), root / "videomme" / "data" / f"{r['videoID']}.mp4", r["question"],
                          opts, LETTERS.index(str(r["answer"]).strip()[0])))
    return items


def _candidates(root: Path, sub: str, name: str) -> list[Item]:
    base = root / sub
    files = sorted((base / "json").glob("*.json"))
    if not files:
        raise ValueError(f"{name}: no {sub}/json/*.json under {root}")
    items = []
    for f in files:
        task = f.stem
        for i, r in enumerate(_load_json(f)):
            opts = [str(c) for c in r["candidates"]]
            ans = str(r["answer"])
            if ans not in opts:
                raise ValueError(f"{name}: answer {ans!r} not among candidates in {f.name} item {i}")
            vid = base / "video" / task / r["video"]
            if not vid.exists():
                vid = base / "video" / r["video"]
            items.append(Item(f"{task}/{i}", vid, r["question"], opts, opts.index(ans)))
    return items


def _egoschema(root: Path) -> list[Item]:
    base = root / "egoschema"
    q, a = base / "questions.json", base / "subset_answers.json"
    if not q.is_file() or not a.is_file():
        raise ValueError(f"egoschema: need egoschema/questions.json and subset_answers.json under {root}")
    answers = _load_json(a)
    items = []
    for r in _load_json(q):
        if r["q_uid"] not in answers:
            continue  # only the public subset has answers
        opts = [r[f"option {i}"] for i in range(5)]
        items.append(Item(r["q_uid"], base / "videos" / f"{r['q_uid']}.mp4", r["question"], opts, int(answers[r["q_uid"]])))
    return items


def _longvideobench(root: Path) -> list[Item]:
    base = root / "longvideobench"
    p = base / "lvb_val.json"
    if not p.is_file():
        raise ValueError(f"longvideobench: no longvideobench/lvb_val.json under {root}")
    return [Item(str(r.get("id", i)), base / "videos" / r["video_path"], r["question"], [str(c) for c in r["candidates"]],
                 int(r["correct_choice"])) for i, r in enumerate(_load_json(p))]


def load_dataset(name: str, root) -> list[Item]:
    root = Path(root)
    if not (root / name).is_dir():
        raise ValueError(f"qa: dataset folder {root / name} not found")
    if name == "videomme":
        items = _videomme(root)
    elif name == "mvbench":
        items = _candidates(root, "mvbench", "mvbench")
    elif name == "mlvu":
        items = _candidates(root, "mlvu", "mlvu")
    elif name == "egoschema":
        items = _egoschema(root)
    elif name == "longvideobench":
        items = _longvideobench(root)
    else:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    if not items:
        raise ValueError(f"qa: {name} has no questions with answers")
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
    """Generated clips + annotations in `name`'s published layout under root/name."""
    from .streams import synthesize_clip

    root = Path(root)
    base = root / name
    qs = [("What colour is the moving square?", ["yellow", "red", "blue", "green"], 0),
          ("What happens in the middle of the clip?", ["nothing", "a scene cut", "it ends", "a fade"], 1)]
    vids = []
    for v in range(n_videos):
        vids.append(f"clip{v}.mp4")
    if name == "videomme":
        recs = []
        for v, fn in enumerate(vids):
            synthesize_clip(base / "data" / fn, seconds=seconds, fps=8, size=(112, 112))
            for j, (q, o, a) in enumerate(qs):
                recs.append({"videoID": Path(fn).stem, "question_id": f"{v}-{j}", "duration": "short", "question": q,
                             "options": [f"{LETTERS[i]}. {x}" for i, x in enumerate(o)], "answer": LETTERS[a]})
        (base / "test.json").write_text(json.dumps(recs))
    elif name in ("mvbench", "mlvu"):
        task = "action_sequence" if name == "mvbench" else "1_plotQA"
        recs = []
        for fn in vids:
            synthesize_clip(base / "video" / task / fn, seconds=seconds, fps=8, size=(112, 112))
            recs += [{"video": fn, "question": q, "candidates": o, "answer": o[a]} for q, o, a in qs]
        (base / "json").mkdir(parents=True, exist_ok=True)
        (base / "json" / f"{task}.json").write_text(json.dumps(recs))
    elif name == "egoschema":
        recs, ans = [], {}
        for v, fn in enumerate(vids):
            for j, (q, o, a) in enumerate(qs):
                uid = f"uid{v}{j}"
                synthesize_clip(base / "videos" / f"{uid}.mp4", seconds=seconds, fps=8, size=(112, 112))
                recs.append({"q_uid": uid, "question": q, **{f"option {i}": x for i, x in enumerate(o + ["other"])}})
                ans[uid] = a
        (base / "questions.json").write_text(json.dumps(recs))
        (base / "subset_answers.json").write_text(json.dumps(ans))
    elif name == "longvideobench":
        recs = []
        for v, fn in enumerate(vids):
            synthesize_clip(base / "videos" / fn, seconds=seconds, fps=8, size=(112, 112))
            recs += [{"id": f"{v}-{j}", "video_path": fn, "question": q, "candidates": o, "correct_choice": a}
                     for j, (q, o, a) in enumerate(qs)]
        base.mkdir(parents=True, exist_ok=True)
        (base / "lvb_val.json").write_text(json.dumps(recs))
    else:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
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


def run_unit_params(p: dict) -> list[dict]:
    """One (dataset, method, budget, streaming) unit over the dataset's first `limit` questions."""
    from ..pipeline import AskConfig, Pipeline
    from ..readers import open_video

    ad = _adapter(p["model"], p["device"], p["dtype"], p["attn"])
    items = load_dataset(p["dataset"], p["data"])[: p["limit"]]
    full = p["budget"] == "full"
    budget = FULL_BUDGET if full else int(p["budget"])
    method = "uniform" if full else p["method"]
    cfg = dict(budget=budget, memory=budget if full else None, method=method, fps=p["fps"],
               max_frames=p["max_frames"], max_new_tokens=p["max_new_tokens"], seed=0)
    correct, ttft, tps, peak, to_llm = 0, [], [], 0.0, []
    by_video: dict[Path, list[Item]] = {}
    for it in items:
        by_video.setdefault(it.video, []).append(it)
    for video, its in by_video.items():
        if not video.is_file():
            raise ValueError(f"qa: video {video} not found")
        pipe = None
        for it in its:
            if pipe is None or not p["streaming"]:
                pipe = Pipeline(ad, AskConfig(**cfg))
                with open_video(video, fps=p["fps"], max_frames=p["max_frames"]) as rd:
                    pipe.push_frames(rd)
            ans = pipe.ask(prompt(it))
            choice = parse_choice(ans.text, len(it.options))
            correct += int(choice == it.answer)
            ttft.append(ans.timings.get("ttft", math.nan))
            n_gen = len(ad.tokenizer(ans.text, add_special_tokens=False).input_ids) if ans.text else 0
            gen_s = ans.timings.get("generate", 0.0)
            tps.append(n_gen / gen_s if gen_s > 0 else math.nan)
            peak = max(peak, ans.peak_memory_mb)
            to_llm.append(ans.tokens_to_llm)
    n = len(items)
    mean = lambda xs: sum(xs) / len(xs) if xs else math.nan  # noqa: E731
    return [{"dataset": p["dataset"], "method": "full" if full else p["method"], "budget": p["budget"],
             "streaming": p["streaming"], "n": n, "correct": correct, "accuracy": correct / n,
             "tokens_to_llm": mean(to_llm), "ttft_s": mean(ttft), "tokens_per_s": mean(tps), "peak_mb": peak,
             "model": p["model"]}]


def add_relative(rows: list[dict]) -> list[dict]:
    """relative = accuracy / accuracy of the full-token run (same dataset and streaming flag)."""
    full = {(r["dataset"], r.get("streaming")): r["accuracy"] for r in rows if r.get("budget") == "full"}
    for r in rows:
        f = full.get((r["dataset"], r.get("streaming")))
        r["relative"] = (r["accuracy"] / f) if f else math.nan
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
    from ..models import load_model  # fail fast on a missing model, one line

    _ADAPTER[(args.model, args.device, args.dtype, args.attn)] = _ADAPTER.get(
        (args.model, args.device, args.dtype, args.attn)) or load_model(args.model, device=args.device, dtype=args.dtype,
                                                                        attn_implementation=args.attn)
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
