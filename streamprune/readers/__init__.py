"""streamprune.readers: frames from video files (PyAV; decord optional) and live sources.

    with open_video("clip.mp4", fps=1.0) as r:       # r.info: VideoInfo
        for f in r: f.time, f.index, f.image         # (H, W, 3) uint8 RGB
    for f in open_live("rtsp://cam/stream", fps=2): ...   # newest frame at 2 fps; r.stats: LiveStats
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .base import Frame, ReaderError, select_frames
from .files import VideoInfo, VideoReader, open_video
from .live import LiveReader, LiveStats, open_live

__all__ = [
    "Frame", "ReaderError", "VideoInfo", "VideoReader", "LiveReader", "LiveStats",
    "open_video", "open_live", "open_source", "select_frames", "is_live_source",
]

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_live_source(source) -> bool:
    """True for a webcam index ("0"), a device path (/dev/video0) or a URL; False for a file path."""
    s = os.fspath(source) if not isinstance(source, int) else str(source)
    if isinstance(source, int) or s.isdigit():
        return True
    if _URL.match(s) and not s.startswith("file://"):
        return True
    return s.startswith("/dev/video")


def open_source(source, *, realtime: bool = False, **kw):
    """File path -> open_video (or a real-time replay through open_live when realtime=True);
    webcam index, device path or URL -> open_live. Keyword arguments go to the chosen opener."""
    if is_live_source(source):
        return open_live(source, realtime=realtime, **kw)
    s = os.fspath(source)
    if s.startswith("file://"):
        s = s[len("file://"):]
    if realtime:
        return open_live(s, realtime=True, **kw)
    return open_video(Path(s), **kw)
