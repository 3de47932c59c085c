"""Generated data for the local lmms-eval tasks in this folder (tests/test_lmms_eval.py runs lmms-eval with
`--include_path tests/lmms_tasks` and its working directory at `root`, where these relative paths resolve).

    write(root) -> {"videomme": [docs], "ovo_backward": [...], "ovo_realtime": [...], "ovo_forward": [...]}

- sp_videomme: Video-MME's document layout (videoID, question, options "A. ..", answer letter, duration,
  domain, sub_category, task_type); the clips sit where lmms-eval's own videomme utils look for them,
  $HF_HOME/videomme/data/<videoID>.mp4 (the test sets HF_HOME=root/hf).
- sp_ovo_*: OVO-Bench's layout (id, task, video, question, options, gt, realtime; forward: test_info with a
  realtime per round), with its chunks as lmms-eval's ovobench utils read them: <data_dir>/<id>.mp4 and
  <data_dir>/<id>_<round>.mp4, each the source clip cut at the question's time (a prefix, as OVO-Bench's
  chunk_video does).

Clips: a coloured square moving over a grey background, written with PyAV (mpeg4, 8 fps, 96 x 128).
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np

FPS = 8
SIZE = (96, 128)  # (H, W)
COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}


def frames(colour: str, seconds: float, seed: int) -> np.ndarray:
    """(T, H, W, 3) uint8: a `colour` square moving left to right; the background brightness drifts."""
    n = int(round(seconds * FPS))
    h, w = SIZE
    rng = np.random.default_rng(seed)
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        out[i] = 96 + int(40 * i / max(1, n - 1))
        x = int((w - 24) * i / max(1, n - 1))
        y = 20 + int(rng.integers(0, 8))
        out[i, y:y + 24, x:x + 24] = COLOURS[colour]
    return out


def write_clip(path: Path, imgs: np.ndarray) -> Path:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=Fraction(FPS))
        s.width, s.height, s.pix_fmt = SIZE[1], SIZE[0], "yuv420p"
        for img in imgs:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _options(colours: list[str]) -> list[str]:
    return [f"{'ABCD'[i]}. {c}" for i, c in enumerate(colours)]


def write(root) -> dict:
    root = Path(root)
    names = list(COLOURS)
    out = {}
    # ---- Video-MME layout: 3 clips x 2 questions
    docs = []
    for v, colour in enumerate(names[:3]):
        vid = f"clip{v}"
        write_clip(root / "hf" / "videomme" / "data" / f"{vid}.mp4", frames(colour, 3.0, v))
        opts = names[v:] + names[:v]  # the right colour first, rotated per clip
        order = [opts[(j + v) % 4] for j in range(4)]
        docs.append({"video_id": f"{v:03d}", "videoID": vid, "question_id": f"{v:03d}-1", "duration": "short",
                     "domain": "Life Record", "sub_category": "Daily Life", "task_type": "Object Recognition",
                     "url": "", "question": "What colour is the moving square?", "options": _options(order),
                     "answer": "ABCD"[order.index(colour)]})
        docs.append({"video_id": f"{v:03d}", "videoID": vid, "question_id": f"{v:03d}-2", "duration": "short",
                     "domain": "Life Record", "sub_category": "Daily Life", "task_type": "Action Recognition",
                     "url": "", "question": "Which way does the square move?",
                     "options": _options(["left to right", "right to left", "up", "down"]), "answer": "A"})
    out["videomme"] = docs

    # ---- OVO-Bench layout: one source clip per colour, questions cut at their time
    chunks = root / "ovo_chunks"
    back, real, fwd = [], [], []
    for v, colour in enumerate(names[:2]):
        src = frames(colour, 6.0, 10 + v)
        source = f"src/source{v}.mp4"
        write_clip(root / source, src)

        def chunk(name: str, t: float, src=src) -> None:  # OVO-Bench: the source cut at the question's time
            write_clip(chunks / f"{name}.mp4", src[: int(t * FPS) + 1])

        opts = [colour] + [c for c in names if c != colour][:3]
        for task, lst, t in (("EPM", back, 2.0), ("HLD", back, 5.0), ("STU", real, 3.5)):
            qid = f"{task}_{v}"
            chunk(qid, t)
            lst.append({"id": qid, "task": task, "video": source, "realtime": t,
                        "question": "What colour was the square?", "options": opts, "gt": 0, "answer": "A"})
        fid = f"SSR_{v}"
        rounds = [1.5, 3.0, 4.5]
        for r, t in enumerate(rounds):
            chunk(f"{fid}_{r}", t)
        fwd.append({"id": fid, "task": "SSR", "video": source, "question": None, "activity": None, "answer": None,
                    "test_info": [{"realtime": t, "step": "the square moves to the right", "type": int(r > 0)}
                                  for r, t in enumerate(rounds)]})
    out.update(ovo_backward=back, ovo_realtime=real, ovo_forward=fwd)
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name, docs in out.items():
        (data / f"sp_{name}.json").write_text(json.dumps(docs))
    return out
