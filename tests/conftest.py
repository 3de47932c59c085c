"""Project-wide test settings."""

import os

import torch

# One intra-op thread: the tiny models' forwards are dominated by thread hand-off on a 2-core shared
# machine (about 20x slower with 2 threads under load). Tests that measure nothing about threading
# are unaffected in what they assert.
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
