"""Frames from video files: PyAV (default) with decord as an optional backend.

Sampling (fps / max_frames / start-end) is planned from a demux-only scan of packet timestamps (cheap: no
decoding): frames are picked by presentation time, whole GOPs without a picked frame are never decoded
(skipped in the packet loop, or by a seek when the gap is long), non-reference frames that are not picked
are skipped inside the decoder (skip_frame=NONREF), and only picked frames are converted to RGB.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import (
    Frame,
    ReaderError,
    StreamSampler,
    check_file,
    check_sampling,
    log,
    one_line,
    quarter_turns,
    select_frames,
    size_callback,
    to_rgb,
)

BACKENDS = ("auto", "pyav", "decord")
SEEK_MIN_PACKETS = 48  # skip gaps at least this long by seeking instead of demuxing through them


@dataclass(frozen=True)
class VideoInfo:
    duration: float  # seconds (0.0 when unknown)
    fps: float  # average frame rate (0.0 when unknown)
    width: int  # display width (after rotation), before any downscale
    height: int
    frames: int  # frame count (0 when unknown)
    rotation: int = 0  # counter-clockwise degrees applied to decoded frames
    codec: str = ""
    pix_fmt: str = ""


@dataclass
class _Plan:
    """Which packets to decode, from the demux scan. All timestamps are stream pts (ints)."""

    keep: set  # pts of the frames to return
    keep_sorted: list  # the same, ascending
    gop_of: dict  # pts -> GOP number (decode order)
    gop_needed: np.ndarray  # (n_gops,) bool
    gop_key_pts: list  # pts of each GOP's first packet
    gop_first_packet: list  # decode-order packet number of each GOP's first packet
    gop_last_pts: dict  # GOP -> pts of its last packet worth decoding (the rest of the GOP is skipped)


def _open_container(path: Path):
    import av

    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise ReaderError(f"cannot read {path.name} as a video: {one_line(e)}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ReaderError(f"cannot open {path}: {one_line(e)}") from None


class VideoReader:
    """Iterable of Frame over a video file; a context manager. `.info` is a VideoInfo."""

    def __init__(self, path, *, fps=None, max_frames=None, start=None, end=None, max_side=None, size=None,
                 threads: int = 0, plan: bool = True):
        check_sampling(fps, max_frames, start, end)
        self.path = check_file(path)
        self.fps, self.max_frames, self.start, self.end = fps, max_frames, start, end
        self.size_fn = size_callback(max_side, size)
        self.threads = threads
        self.bad_packets = 0
        self.corrupt_frames = 0
        self.decoded = 0  # frames that came out of the decoder (for benchmarks)
        self.container = _open_container(self.path)
        try:
            if not self.container.streams.video:
                kinds = sorted({s.type for s in self.container.streams})
                if not kinds or kinds == ["data"]:  # e.g. an mp4 cut before its index (moov), or written empty
                    raise ReaderError(f"{self.path.name} has no readable video stream (no stream index: the file "
                                      "is truncated, still being written, or holds no frames)")
                raise ReaderError(f"{self.path.name} has no video stream ({', '.join(kinds)} streams only)")
            self.stream = self.container.streams.video[0]
            cc = self.stream.codec_context
            if not cc.width or not cc.height:
                raise ReaderError(f"{self.path.name}: video stream has no frame size (unsupported or corrupt)")
            self.time_base = self.stream.time_base
            self._t0 = self.stream.start_time  # pts of time 0 (None: first frame's)
            self._times = None  # sorted frame times from the scan (seconds)
            self._plan = None
            self._turns = 0
            self._partial = False
            # truncation: the header's duration (0.0: unknown) against what the file holds (None: not known
            # before reading it through); `truncated` is True when clearly less than stated could be read
            self.truncated = False
            self.stated_duration = 0.0
            self.read_duration: float | None = None
            self._warned_truncated = False
            self._scan(plan)  # always: exact frame indices by pts, even when frames fail to decode
            self.info = self._make_info()
        except BaseException:
            self.container.close()
            raise

    # ------------------------------------------------------------------ metadata
    def _make_info(self) -> VideoInfo:
        s, cc = self.stream, self.stream.codec_context
        rate = s.average_rate or s.guessed_rate or 0
        rate = float(rate) if rate else 0.0
        frames = int(s.frames or 0)
        duration = 0.0
        if self._times is not None and len(self._times) and not self._partial:
            frames = len(self._times)
            step = (1.0 / rate) if rate else 0.0
            duration = float(self._times[-1]) + step
        elif s.duration and s.time_base:
            duration = float(s.duration * s.time_base)
        elif self.container.duration:
            duration = self.container.duration / 1e6
        if not rate and frames and duration:
            rate = frames / duration
        rot = 90 * self._turns
        w, h = (cc.height, cc.width) if rot % 180 else (cc.width, cc.height)
        return VideoInfo(duration, rate, w, h, frames, rot, cc.name or "", cc.format.name if cc.format else "")

    def _rate(self) -> float:
        r = self.stream.average_rate or self.stream.guessed_rate or 0
        return float(r) if r else 0.0

    def _step(self) -> float:
        r = self._rate()
        return 1.0 / r if r else 0.0

    def _check_truncation(self, n_read: int, end: float | None, all_end: float | None = None) -> None:
        """Compare what could be read (n_read frames/packets, ending at `end` seconds) with the container's
        own count (mp4, mov, avi: exact) or duration (the stream's, else the container's, against `all_end`,
        where every stream's packets end, when known), and set `truncated`, `stated_duration`, `read_duration`."""
        s, rate, step = self.stream, self._rate(), self._step()
        frames = int(s.frames or 0)
        s_dur = float(s.duration * s.time_base) if s.duration and s.time_base else 0.0
        c_dur = self.container.duration / 1e6 if self.container.duration else 0.0
        if end is None:
            end = n_read * step if step else None
        self.read_duration = end
        if frames and rate:
            self.stated_duration = frames / rate
            self.truncated = n_read < frames - max(2, frames // 100)
        elif s_dur or c_dur:
            self.stated_duration = s_dur or c_dur
            slack = max(2 * step, 1.0 if not s_dur else 0.25, 0.02 * self.stated_duration)
            reach = end if s_dur or all_end is None else all_end if end is None else max(end, all_end)
            self.truncated = reach is not None and reach < self.stated_duration - slack
        if self.truncated and end is None:
            self.read_duration = 0.0

    def _warn_truncated(self) -> None:
        """One warning per reader when the requested range reaches past what the file holds."""
        if not self.truncated or self._warned_truncated or self.read_duration is None:
            return
        if self.end is not None and self.end <= self.read_duration:
            return
        self._warned_truncated = True
        log.warning("%s: only %.1f s of the %.1f s its header states could be read (file truncated or damaged)",
                    self.path.name, self.read_duration, self.stated_duration)

    def _time(self, pts) -> float:
        if self._t0 is None:
            self._t0 = pts
        return float((pts - self._t0) * self.time_base)

    # ------------------------------------------------------------------ planning
    def _scan(self, sampling: bool) -> None:
        """Second handle: decode the first frame (validation, rotation); with `sampling`, demux the rest
        (no decode) to learn every packet's pts and the GOP layout."""
        import av

        pts_list, keys = [], []
        scan = _open_container(self.path)
        cc = scan.streams.video[0].codec_context
        cc.thread_count = 1
        first, error = None, None
        tb = float(self.time_base)
        t0 = self._t0
        stop_after, keys_past_end = (None if self.end is None else self.end), 0
        self._partial = False
        n_packets, last_pts, prev_dts, to_eof = 0, None, None, sampling  # for the truncation check
        video = scan.streams.video[0]
        # only the container's duration to check against (mkv, webm): it covers every stream, so they are read too
        others = [st for st in scan.streams if st.index != video.index and st.type in ("audio", "video")] \
            if sampling and not (self.stream.frames or self.stream.duration) else []
        other_end = None  # seconds (absolute) where the other streams' packets end
        try:
            for pkt in scan.demux([video] + others):
                if pkt.stream.index != video.index:
                    if pkt.pts is not None and pkt.stream.time_base:
                        e = float((pkt.pts + (pkt.duration or 0)) * pkt.stream.time_base)
                        other_end = e if other_end is None else max(other_end, e)
                    continue
                if pkt.size or pkt.pts is not None:  # not the demuxer's final flush packet
                    n_packets += 1
                    if pkt.pts is not None:
                        last_pts = pkt.pts if last_pts is None else max(last_pts, pkt.pts)
                if first is None:
                    try:
                        got = cc.decode(pkt if pkt.size else None)
                    except av.error.FFmpegError as e:
                        error = e
                        got = []
                    if got:
                        first = got[0]
                        self._turns = quarter_turns(first.rotation)
                        if not sampling:
                            break
                if pkt.size == 0 or not sampling:
                    continue
                if pkt.pts is None:
                    log.debug("%s: packet without pts; sampling on the fly", self.path.name)
                    sampling = False
                    continue
                if pkt.dts is not None:
                    if prev_dts is not None and pkt.dts < prev_dts:  # a timestamp reset (concatenated streams)
                        log.debug("%s: timestamps go back at packet %d; sampling on the fly", self.path.name,
                                  n_packets)
                        sampling = False
                        continue
                    prev_dts = pkt.dts
                if t0 is None:
                    t0 = pkt.pts
                if stop_after is not None and pkt.is_keyframe and (pkt.pts - t0) * tb > stop_after:
                    keys_past_end += 1
                    if keys_past_end == 2:  # everything up to `end` is known (open GOPs included)
                        self._partial = True
                        to_eof = False
                        break
                pts_list.append(pkt.pts)
                keys.append(pkt.is_keyframe)
        except av.error.FFmpegError as e:
            log.warning("%s: stopped scanning at packet %d: %s", self.path.name, len(pts_list), one_line(e))
            error = error or e
        finally:
            scan.close()
        if to_eof:
            t_first = self._t0 if self._t0 is not None else t0
            end = (None if last_pts is None or t_first is None
                   else float((last_pts - t_first) * self.time_base) + self._step())
            all_end = None  # every stream's extent, against the container's duration
            if end is not None and other_end is not None:
                c_start = self.container.start_time / 1e6 if self.container.start_time is not None \
                    else float(t_first * self.time_base)
                all_end = max(float(t_first * self.time_base) + end, other_end) - c_start
            self._check_truncation(n_packets, end, all_end)
        if first is None:
            why = f": {one_line(error)}" if error is not None else ""
            raise ReaderError(f"{self.path.name}: no decodable video frame{why}")
        if not sampling or not pts_list:
            return
        pts_arr = np.asarray(pts_list, dtype=np.int64)  # (n,) decode order
        order = np.sort(pts_arr)
        if len(np.unique(order)) != len(order):
            log.debug("%s: duplicate pts; sampling on the fly", self.path.name)
            return
        if self._t0 is None:
            self._t0 = int(order[0])
        times = (order - self._t0).astype(np.float64) * float(self.time_base)  # (n,) presentation order
        self._times = times
        self._order = order
        picked = select_frames(times, fps=self.fps, max_frames=self.max_frames, start=self.start, end=self.end)
        keep_sorted = [int(p) for p in order[picked]]
        keep = set(keep_sorted)
        gop = np.cumsum(np.asarray(keys, dtype=bool) | (np.arange(len(keys)) == 0)) - 1  # (n,) GOP number
        n_gops = int(gop[-1]) + 1
        needed = np.zeros(n_gops, dtype=bool)
        first = np.searchsorted(gop, np.arange(n_gops), side="left")
        key_pts = pts_arr[first]
        last = np.full(n_gops, -1)  # (n_gops,) decode index of the last packet to feed
        for i, p in enumerate(pts_list):
            if p in keep:
                g = gop[i]
                needed[g] = True
                last[g] = max(last[g], i)
                if g > 0 and p < key_pts[g]:  # open-GOP leading frame: needs the previous GOP in full
                    needed[g - 1] = True
                    last[g - 1] = first[g] - 1
        last_pts = {g: pts_list[int(i)] for g, i in enumerate(last) if i >= 0}
        self._plan = _Plan(keep, keep_sorted, dict(zip(pts_list, gop.tolist())), needed,
                           [int(x) for x in key_pts], first.tolist(), last_pts)

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[Frame]:
        if self.container is None:
            raise ReaderError(f"{self.path.name}: reader is closed")
        if self._plan is not None:
            return self._iter_planned()
        return self._iter_sequential()

    def _configure(self):
        cc = self.stream.codec_context
        cc.thread_type = "AUTO"
        cc.thread_count = self.threads
        return cc

    def _decode(self, cc, packet):
        """Decode one packet (None drains); bad data is logged and skipped."""
        import av

        try:
            frames = cc.decode(packet)
        except av.error.FFmpegError as e:
            self.bad_packets += 1
            level = log.warning if self.bad_packets == 1 else log.debug
            t = "" if packet is None or packet.pts is None else f" at {self._time(packet.pts):.2f}s"
            level("%s: skipping undecodable data%s: %s", self.path.name, t, one_line(e))
            return []
        out = []
        for f in frames:
            self.decoded += 1
            if f.is_corrupt:
                self.corrupt_frames += 1
                level = log.warning if self.corrupt_frames == 1 else log.debug
                level("%s: skipping corrupt frame at %.2fs", self.path.name, self._time(f.pts or 0))
                continue
            out.append(f)
        return out

    def _packets(self):
        """Demux video packets; a read error mid-file ends the stream with a warning."""
        import av

        it = self.container.demux(self.stream)
        while True:
            try:
                pkt = next(it)
            except StopIteration:
                return
            except av.error.EOFError:
                return
            except av.error.FFmpegError as e:
                log.warning("%s: stopped reading (file truncated or damaged?): %s", self.path.name, one_line(e))
                return
            if pkt.size == 0:
                continue
            yield pkt

    def _emit(self, frame, index) -> Frame:
        return Frame(self._time(frame.pts), index, to_rgb(frame, self.size_fn, self._turns))

    def _iter_planned(self) -> Iterator[Frame]:
        plan, cc = self._plan, self._configure()
        ks, nk = plan.keep_sorted, len(plan.keep_sorted)
        self._warn_truncated()
        if not nk:
            return
        index_of = dict(zip(self._order.tolist(), range(len(self._order))))
        pending = 0  # next entry of ks not yet returned
        feeding, skip_mode, last_seek, done_gop = False, "DEFAULT", None, -1
        first_g = int(np.argmax(plan.gop_needed))
        if first_g > 0:
            self._seek(plan.gop_key_pts[first_g])
            last_seek = first_g
        try:
            packets = self._packets()
            while pending < nk:
                pkt = next(packets, None)
                if pkt is not None:
                    g = plan.gop_of.get(pkt.pts)
                    if g is not None and (g == done_gop or not plan.gop_needed[g]):  # nothing left to pick here
                        if feeding:  # drain what the decoder holds, then reset it
                            pkt, feeding = None, False
                        else:
                            h = g + 1 if g == done_gop else g
                            nxt = int(np.argmax(plan.gop_needed[h:])) + h if plan.gop_needed[h:].any() else None
                            if nxt is None:
                                break
                            gap = plan.gop_first_packet[nxt] - plan.gop_first_packet[g]
                            if gap >= SEEK_MIN_PACKETS and last_seek != nxt:
                                self._seek(plan.gop_key_pts[nxt])
                                last_seek = nxt
                            continue
                        drain_then_flush = True
                    else:
                        mode = "DEFAULT" if g is None or pkt.pts in plan.keep else "NONREF"
                        if mode != skip_mode:
                            cc.skip_frame = skip_mode = mode
                        feeding, drain_then_flush = True, False
                        if g is not None and plan.gop_last_pts.get(g) == pkt.pts:
                            done_gop = g  # the rest of this GOP holds no picked frame and no reference
                else:
                    drain_then_flush = None  # end of file: drain and stop
                frames = self._decode(cc, pkt)
                while frames:
                    f = frames.pop(0)
                    p = f.pts
                    if p is None or pending >= nk or p < ks[pending]:
                        continue
                    if p != ks[pending]:  # planned frame(s) missing (damaged data): this one stands in
                        j = bisect.bisect_right(ks, p, lo=pending)
                        log.debug("%s: %d planned frame(s) missing before %.2fs", self.path.name, j - pending,
                                  self._time(p))
                        pending = j
                    else:
                        pending += 1
                    out = self._emit(f, index_of.get(p, -1))
                    del f
                    yield out
                    del out
                if drain_then_flush is None:
                    break
                if drain_then_flush:
                    cc.flush_buffers()
            if pending < nk:
                log.warning("%s: %d of %d sampled frames could not be decoded", self.path.name, nk - pending, nk)
        finally:
            cc.skip_frame = "DEFAULT"

    @property
    def planned_indices(self) -> list[int] | None:
        """Presentation-order indices of the frames iteration will return (None: decided on the fly)."""
        if self._plan is None:
            return None
        return np.searchsorted(self._order, np.asarray(self._plan.keep_sorted, dtype=np.int64)).tolist()

    def _seek(self, pts) -> None:
        import av

        try:
            self.container.seek(int(pts), stream=self.stream, backward=True)
        except av.error.FFmpegError as e:
            log.debug("%s: seek failed (%s); decoding through", self.path.name, one_line(e))

    def _iter_sequential(self) -> Iterator[Frame]:
        """One pass, no plan (packets without pts, or plan=False): frames are picked on the fly."""
        cc = self._configure()
        rate = self.info.fps
        fps = self.fps
        if self.max_frames is not None:  # uniform spread needs the duration
            span = (self.end if self.end is not None else self.info.duration) - (self.start or 0.0)
            if span <= 0:
                raise ReaderError(f"{self.path.name}: unknown duration; cannot spread max_frames over it")
            fps = self.max_frames / span if fps is None else min(fps, self.max_frames / span)
        sampler = StreamSampler(fps, start=self.start, end=self.end, tol=0.5 / rate if rate else 1e-3)
        if self.start:
            self._seek(int(self.start / self.time_base) + (self.stream.start_time or 0))
        self._warn_truncated()
        count, returned = 0, 0
        step = 1.0 / rate if rate else 1e-3
        offset, last_t = 0.0, None  # timestamps that go back (a reset: concatenated streams) continue instead
        for pkt in itertools.chain(self._packets(), [None]):  # None drains the decoder
            for f in self._decode(cc, pkt):
                count += 1
                if f.pts is not None:
                    t = self._time(f.pts) + offset
                    if last_t is not None and t < last_t - 1e-6:
                        log.info("%s: timestamps restart at frame %d (%.2fs); times continue from %.2fs",
                                 self.path.name, count - 1, t - offset, last_t + step)
                        offset += last_t + step - t
                        t = last_t + step
                else:
                    t = (count - 1) / rate if rate else 0.0
                last_t = t
                if sampler.done(t):
                    return
                if not sampler.keep(t):
                    continue
                index = round(t * rate) if (self.start and rate) else count - 1  # after a seek: from time
                yield Frame(t, index, to_rgb(f, self.size_fn, self._turns))
                returned += 1
                if self.max_frames is not None and returned >= self.max_frames:
                    return
        if self.read_duration is None and not self.start:  # read to the end: now the extent is known
            self._check_truncation(count + self.corrupt_frames, None if last_t is None else last_t + step)
            self._warn_truncated()

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def __repr__(self) -> str:
        return f"VideoReader({str(self.path)!r}, info={self.info})"


# ---------------------------------------------------------------------- decord backend
def _decord_rgb(arr) -> np.ndarray:
    """One decord frame -> (h, w, 3) uint8, repairing decord's reading of padded rows.

    decord sizes a frame's array as (height, width, linesize / width), taking FFmpeg's row stride
    (linesize, padded to the CPU's SIMD alignment: 32 bytes with AVX2, 64 with AVX-512) for
    width * channels. Whenever the padded stride is a multiple of the width (width 32 under 64-byte
    alignment: 96 -> 192 bytes; 16, 24 or 48 under 32-byte alignment) the frame comes back as
    (h, w, 4 / 6 / 12 ...) and get_batch fails its copy check ("from_size == to_size (4608 vs. 2304)").
    The bytes are all there: each row is linesize bytes, the first 3 * width of them pixels."""
    a = arr.asnumpy() if hasattr(arr, "asnumpy") else np.asarray(arr)  # any decord bridge
    if a.ndim != 3 or a.dtype != np.uint8 or a.shape[2] < 3:
        raise ReaderError(f"decord returned a frame of shape {tuple(a.shape)} ({a.dtype}), not RGB")
    h, w, c = a.shape
    if c == 3:
        return a
    return np.ascontiguousarray(a.reshape(h, w * c)[:, : 3 * w].reshape(h, w, 3))


def _decord_rgb_batch(arr) -> np.ndarray:
    """A decord batch -> (b, h, w, 3) uint8."""
    a = arr.asnumpy() if hasattr(arr, "asnumpy") else np.asarray(arr)  # (b, h, w, 3)
    if a.ndim != 4 or a.shape[3] != 3 or a.dtype != np.uint8:
        raise ReaderError(f"decord returned a batch of shape {tuple(a.shape)} ({a.dtype}), not RGB")
    return a


def _resize_rgb(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) with the scaler the PyAV backend uses (swscale, area)."""
    import av

    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
    return frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()


class DecordReader:
    """Same contract as VideoReader on top of decord (batched reads). The file is validated and its
    rotation read with PyAV first; frames come out in display orientation (decord2 3.x rotates by
    itself, decord 0.6 does not: the first frame tells which) and at the size the PyAV backend gives.
    Every decord failure is a ReaderError with a one-line reason."""

    def __init__(self, path, *, fps=None, max_frames=None, start=None, end=None, max_side=None, size=None,
                 threads: int = 0, batch: int = 32):
        check_sampling(fps, max_frames, start, end)
        size_fn = size_callback(max_side, size)
        try:
            import decord
        except ImportError:
            raise ReaderError("backend='decord' needs decord: pip install decord2 (or decord)") from None
        self._error = decord.DECORDError
        with VideoReader(path, plan=False) as probe:  # clear errors for bad files; rotation
            self.path, pinfo, self.turns = probe.path, probe.info, probe._turns
            ref = next(iter(probe), None) if self.turns else None  # display-oriented first frame
        dh, dw = pinfo.height, pinfo.width  # display size
        th, tw = size_fn(dh, dw) if size_fn is not None else (dh, dw)
        if th < 1 or tw < 1:
            raise ReaderError(f"size callback returned an empty size {th}x{tw}")
        self.target = (int(th), int(tw))  # what the PyAV backend returns: (height, width), display
        self.batch = batch
        self.decoded = 0
        self.truncated, self.read_duration, self.stated_duration = False, None, 0.0  # not checked with decord
        self._next = None  # index the per-frame reader's next() returns
        with self._decord_errors():
            self.vr = decord.VideoReader(str(self.path), num_threads=threads)
            if self.turns and self._rotates_itself(ref.image if ref is not None else None):
                self.turns = 0
            if self.target != (dh, dw):  # resize at decode, in the orientation decord hands frames out
                rh, rw = (tw, th) if self.turns % 2 else (th, tw)
                self.vr = None
                self.vr = decord.VideoReader(str(self.path), num_threads=threads, width=rw, height=rh)
            n = len(self.vr)
            if n == 0:
                raise ReaderError(f"{self.path.name} has no video frames")
            # get_batch copies whole frames and fails on padded rows (see _decord_rgb): read one frame
            # at a time when the first frame shows them
            self.per_frame = self._raw_channels(0) != 3
            self.times = np.asarray(self.vr.get_frame_timestamp(range(n))[:, 0], dtype=np.float64)  # (n,)
            rate = float(self.vr.get_avg_fps() or 0.0) or pinfo.fps
        self.indices = select_frames(self.times, fps=fps, max_frames=max_frames, start=start, end=end)
        self.info = VideoInfo(float(self.times[-1] + (1.0 / rate if rate else 0.0)), rate, dw, dh, n,
                              pinfo.rotation, pinfo.codec, pinfo.pix_fmt)

    # ------------------------------------------------------------------ helpers
    @contextmanager
    def _decord_errors(self):
        """DECORDError (a C++ check with its file and line, sometimes a stack) -> one-line ReaderError."""
        try:
            yield
        except self._error as e:
            raise ReaderError(f"cannot read {self.path.name} with decord: {one_line(e)}") from None

    def _raw_channels(self, k: int) -> int:
        a = self.vr[k]
        self._next = k + 1
        shape = tuple(getattr(a, "shape", ()))
        return int(shape[2]) if len(shape) == 3 else 0

    def _rotates_itself(self, ref) -> bool:
        """Whether this decord build applies the display rotation (decord2 3.x) or not (decord 0.6),
        from its first frame at full size against PyAV's (`ref`, display orientation)."""
        img = _decord_rgb(self.vr[0])
        self._next = 1
        if ref is None:
            return False
        turned = np.rot90(img, k=self.turns)
        if img.shape != turned.shape:  # a quarter turn of a non-square frame: the shape tells
            return img.shape == ref.shape
        if img.shape != ref.shape:
            return False
        ref = ref.astype(np.int16)  # 180 degrees, or square: the content tells
        return np.abs(img.astype(np.int16) - ref).mean() <= np.abs(turned.astype(np.int16) - ref).mean()

    def _read(self, idx) -> list[np.ndarray]:
        """Frames at `idx` (ascending) as decord gives them, rows repaired."""
        if not self.per_frame:
            try:
                batch = self.vr.get_batch(list(map(int, idx)))
                self._next = None  # where decord stands after a batch is its own business
                return list(_decord_rgb_batch(batch))
            except self._error:  # padded rows on a later frame (size change mid-stream): go frame by frame
                self.per_frame = True
        out = []
        for k in map(int, idx):
            try:
                a = self.vr.next() if k == self._next else self.vr[k]
            except (StopIteration, IndexError):
                raise ReaderError(f"{self.path.name}: decord has no frame {k}") from None
            self._next = k + 1
            out.append(_decord_rgb(a))
        return out

    @property
    def planned_indices(self) -> list[int]:
        return self.indices.tolist()

    def __iter__(self) -> Iterator[Frame]:
        if self.vr is None:
            raise ReaderError(f"{self.path.name}: reader is closed")
        th, tw = self.target
        for i in range(0, len(self.indices), self.batch):
            idx = self.indices[i:i + self.batch]
            with self._decord_errors():
                imgs = self._read(idx)
            self.decoded += len(idx)
            for img, k in zip(imgs, idx):
                if self.turns:
                    img = np.rot90(img, k=self.turns)
                if img.shape[:2] != (th, tw):  # decord ignored or rounded the requested size
                    img = _resize_rgb(img, th, tw)
                yield Frame(float(self.times[k]), int(k), np.ascontiguousarray(img))

    def close(self) -> None:
        self.vr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_video(path, *, fps=None, max_frames=None, start=None, end=None, backend="auto", max_side=None,
               size=None, threads: int = 0):
    """Open a video file; iterate the result for Frame(time, index, image (H, W, 3) uint8 RGB).

    fps: sample at this rate (nearest frame per tick, by pts); max_frames: at most this many, spread
    uniformly; start/end: a time range in seconds; max_side / size(h, w) -> (h, w): downscale at decode."""
    if backend not in BACKENDS:
        raise ReaderError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    kw = dict(fps=fps, max_frames=max_frames, start=start, end=end, max_side=max_side, size=size, threads=threads)
    if backend == "decord":
        return DecordReader(path, **kw)
    return VideoReader(path, **kw)
