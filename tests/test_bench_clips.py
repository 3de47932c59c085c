"""bench.clips, the one synthetic-clip writer: frames read back as written, display rotation written the way
FFmpeg writes it (so that it works on PyAV 15 as on 18), seen by the readers."""

from __future__ import annotations

import struct

import av
import numpy as np
import pytest

from streamprune.bench import clips
from streamprune.readers import open_video


def _tkhd_matrix(path) -> tuple[int, ...]:
    data = path.read_bytes()
    i = data.index(b"tkhd") - 4  # box start
    at = i + 8 + (4 + 8 + 8 + 4 + 4 + 8 if data[i + 8] == 1 else 24) + 16
    return struct.unpack(">9i", data[at:at + 36])


@pytest.mark.parametrize("deg", [90, -90, 180])
def test_rotation_is_the_display_matrix_pyav_writes_and_the_reader_sees_it(tmp_path, deg):
    p = clips.write_video(tmp_path / f"r{deg}.mp4", n=3, w=64, h=48, rotation=deg)
    assert _tkhd_matrix(p) == tuple(clips.display_matrix(deg))
    with open_video(p) as r:
        img = next(iter(r)).image
        assert r.info.rotation == deg % 360
    assert img.shape == ((48, 64, 3) if deg == 180 else (64, 48, 3))
    if not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        return  # PyAV < 16: nothing to compare with
    q = tmp_path / f"native{deg}.mp4"
    with av.open(str(q), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.set_display_rotation(deg)
        for i in range(3):
            for pkt in s.encode(av.VideoFrame.from_ndarray(clips.pattern(i, 48, 64), format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    assert _tkhd_matrix(q) == _tkhd_matrix(p)


def test_frames_read_back_in_order_with_their_times(tmp_path):
    p = clips.write_video(tmp_path / "p.mp4", n=12, rate=4, gop=4)
    with open_video(p) as r:
        frames = list(r)
    assert [round(clips.green_level(f.image) / 8) for f in frames] == list(range(12))
    assert [f.time for f in frames] == pytest.approx([i / 4 for i in range(12)], abs=1e-3)
    v = clips.write_video(tmp_path / "vfr.mkv", n=4, pts_ms=[0, 100, 900, 1000], bframes=False)
    with open_video(v) as r:
        assert [f.time for f in r] == pytest.approx([0, 0.1, 0.9, 1.0], abs=1e-3)


def test_ready_made_clips(tmp_path):
    box = clips.write_box_clip(tmp_path / "b.mp4", n_frames=6, rate=2, size=(64, 96), cut_at=3)
    with open_video(box) as r:
        imgs = [f.image for f in r]
    assert len(imgs) == 6 and imgs[0].shape == (64, 96, 3)
    assert imgs[4].mean() > imgs[1].mean() + 50  # the scene brightens at cut_at
    s = clips.synthesize_clip(tmp_path / "s.mp4", seconds=1.0, fps=8, size=(48, 64))
    with open_video(s) as r:
        assert r.info.frames == 8 and (r.info.width, r.info.height) == (64, 48)
    f = list(clips.scene_frames(4, fps=2, size=(32, 40)))
    assert [x.time for x in f] == [0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5] and f[0].image.shape == (32, 40, 3)
    with pytest.raises(ValueError, match="at least one frame"):
        clips.write_clip(tmp_path / "none.mp4", [])
    g = clips.corrupt_packets(clips.write_video(tmp_path / "c.mp4", n=10, gop=5), 2, 2, dst=tmp_path / "c2.mp4")
    assert g.read_bytes() != (tmp_path / "c.mp4").read_bytes() and g.stat().st_size == (tmp_path / "c.mp4").stat().st_size
    assert np.array_equal(clips.pattern(3, 8, 8), clips.pattern(3, 8, 8))
