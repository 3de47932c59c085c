"""Video-LLaVA, LLaVA-OneVision and LLaVA-NeXT-Video adapters on tiny random-weight models."""

import pytest
import torch
import transformers

from streamprune.models import EncodedBlock, load_model, write_tiny_model

transformers.utils.logging.disable_progress_bar()
LLAVA = ("video_llava", "llava_onevision", "llava_next_video")
Q = "What does the man pick up after the phone rings?"


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_llava")
    yield {f: load_model(write_tiny_model(f, root / f), device="cpu") for f in LLAVA}


def clip(T=4, h=60, w=90, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (T, h, w, 3), dtype=torch.uint8, generator=g), torch.arange(T) / 2.0


def stream(a, imgs, times):
    blocks = [a.encode(imgs[i:i + 1], times[i:i + 1]) for i in range(len(imgs))]
    return EncodedBlock(torch.cat([b.tokens for b in blocks]), torch.cat([b.times for b in blocks]),
                        torch.cat([b.payload for b in blocks]))


@pytest.mark.parametrize("family", LLAVA)
def test_pruned_prompt_equals_masked_full_prompt(adapters, family):
    a = adapters[family]
    imgs, times = clip(seed=1)
    mem = stream(a, imgs, times)
    keep = torch.randperm(len(mem), generator=torch.Generator().manual_seed(0))[: len(mem) // 3].sort().values
    pruned = a.build_inputs(mem, Q, keep=keep)
    full = a.build_inputs(mem, Q)
    extra = 1 if family == "llava_onevision" else 0  # the newline placeholder is always there
    n_ph = int((pruned["input_ids"] == a.video_token_id).sum())
    assert n_ph == len(keep) + extra and int(pruned["visual_mask"].sum()) == len(keep)
    ph = (full["input_ids"][0] == a.video_token_id).nonzero()[:, 0]
    drop = torch.ones(len(ph), dtype=torch.bool)
    drop[keep] = False
    drop[len(mem):] = False  # the newline (last placeholder) stays
    full["attention_mask"][0, ph[drop]] = 0
    torch.testing.assert_close(a.logits(pruned)[-1], a.logits(full)[-1], atol=1e-5, rtol=0)
    full["attention_mask"][:] = 1
    assert (a.logits(full)[-1] - a.logits(pruned)[-1]).abs().max() > 1e-3


def test_positions_original_and_compact_pinned(adapters):
    a = adapters["llava_onevision"]
    imgs, times = clip(T=3)
    mem = stream(a, imgs, times)  # 3 frames x 4 tokens
    pre, post = a.render_prompt(Q)
    s = len(pre)
    keep = [1, 2, 9]  # frame 0 tokens 1, 2; frame 2 token 1
    pos = a.build_inputs(mem, Q, keep=keep)["position_ids"][0]
    assert pos[s:s + 4].tolist() == [s + 1, s + 2, s + 9, s + 12]  # newline after all 12 frame slots
    assert pos[s + 4:].tolist() == list(range(s + 13, s + 13 + len(post)))
    pos = a.build_inputs(mem, Q, keep=keep, positions="compact")["position_ids"][0]
    assert pos.tolist() == list(range(s + 4 + len(post)))
    # the newline token's features are the learned image_newline parameter
    feats = a.build_inputs(mem, Q, keep=keep)["mm_encoder_outputs"]["video"].pooler_output[0]
    assert torch.equal(feats[-1], a.model.model.image_newline.detach())
    assert torch.equal(feats[:3], mem.tokens[keep])


def test_video_llava_crop_and_frame_size(adapters):
    a = adapters["video_llava"]
    assert a.frame_size(60, 90) == (56, 84) and a.frame_size(90, 60) == (84, 56)
    x = a.pixel_values(torch.zeros(2, 60, 90, 3, dtype=torch.uint8))
    assert x.shape == (1, 2, 3, 56, 56)
    torch.testing.assert_close(x[0, 0, :, 0, 0], (0 - a.mean.flatten()) / a.std.flatten())


@pytest.mark.parametrize("family", LLAVA)
def test_token_geometry_for_the_contact_sheet(adapters, family):
    """Each frame token maps to one cell of a g x g grid over the region the tower sees; CLS maps nowhere."""
    a = adapters[family]
    imgs, times = clip(T=1, h=60, w=90)
    blk = a.encode(imgs, times)
    (rows, cols), cells = a.token_cells(blk.payload)
    per = a.tokens_per_frame()
    grid = rows * cols
    assert rows == cols and cells.shape == (per,)
    if family == "video_llava":  # CLS first, then the 4x4 patches row-major
        assert grid == per - 1 and cells[0] == -1 and torch.equal(cells[1:], torch.arange(grid))
        assert a.token_view(60, 90) == (0, 15, 60, 60)  # shortest edge -> centre square
    else:
        assert grid == per and torch.equal(cells, torch.arange(grid))
