"""Quality of StreamingSelector variants on the features suite streams (cached features under out/features/cache), the metrics of bench.features.measure:
    python bench/quality_variants.py [streams] [budgets] [constructor-kwargs-json]"""
# ruff: noqa: E401, E402, E702
import json
import math
import sys
import time
from pathlib import Path
import numpy as np
import torch
torch.set_num_threads(1)
import streamprune
from streamprune.bench.features import FeatureStream
from streamprune.bench.metrics import local_reconstruction_vectors, reconstruction_ratio_vectors, temporal_coverage, needle_recall

from streamprune.select.streaming import StreamingSelector

CACHE = Path(__file__).resolve().parents[1] / "out" / "features" / "cache"
FILES = {p.name.split("-")[0] + "-" + p.name.split("-")[1]: p for p in CACHE.glob("stream-*.pt")}
_S = {}
def load(name):
    if name not in _S:
        p = next(p for p in CACHE.glob(f"stream-{name}-*.pt"))
        _S[name] = FeatureStream(**torch.load(p, weights_only=True))
    return _S[name]

def run(name, K, factory=None, **kw):
    st = load(name)
    sel = (factory or StreamingSelector)(K, **kw)
    ps = []
    for t, x in st.blocks():
        t0 = time.thread_time(); sel.push(x, t); ps.append(time.thread_time() - t0)
    m = sel.memory
    idx = sel.final(K)
    kept, ids, kt = m.tokens[idx], m.ids[idx], m.times[idx]
    k = kept.shape[0]
    rank = int((st.s2 > 1e-10 * float(st.s2[0])).sum())
    ev = needle_recall(ids, st.events)[0] if st.events else math.nan
    return dict(stream=name, K=K, kept=k, recon=reconstruction_ratio_vectors(st.X, st.s2, kept) if k < rank else math.nan,
                local=local_reconstruction_vectors(st.X, st.times, kept, kt, st.window), needle=ev,
                gap=temporal_coverage(kt, 0.0, st.duration), ms=1e3 * float(np.mean(ps)))

if __name__ == "__main__":
    streams = sys.argv[1].split(",") if len(sys.argv) > 1 else ["long180-effnet", "bunny-effnet", "bikes-pixel", "synthetic-d256"]
    budgets = [int(b) for b in sys.argv[2].split(",")] if len(sys.argv) > 2 else [32, 128, 512]
    kw = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    print("file", streamprune.__file__, kw, flush=True)
    for s in streams:
        for K in budgets:
            r = run(s, K, **kw)
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()), flush=True)
