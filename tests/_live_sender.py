"""Loopback MPEG-TS sender for the live reader tests (run as a subprocess; 127.0.0.1 only).

    python tests/_live_sender.py tcp  FRAMES FPS AFTER      # listens; prints the port; serves one client
    python tests/_live_sender.py udp  FRAMES FPS AFTER PORT # sends datagrams to 127.0.0.1:PORT

AFTER: "close" (stop and disconnect) or "stall" (stop sending but keep the connection open).
"""

from __future__ import annotations

import socket
import sys
import time

import av
import numpy as np


class _UDPWriter:
    def __init__(self, port: int):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addr = ("127.0.0.1", port)

    def write(self, b) -> int:
        b = bytes(b)
        for i in range(0, len(b), 1316):
            self.sock.sendto(b[i:i + 1316], self.addr)
        return len(b)

    def flush(self):
        pass


def serve(out, frames: int, fps: float, stall: bool = False) -> None:
    c = av.open(out, "w", format="mpegts", buffer_size=1316, container_options={"flush_packets": "1"})
    s = c.add_stream("libx264", rate=int(fps))
    s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
    s.options = {"preset": "ultrafast", "tune": "zerolatency", "g": "5"}
    t0 = time.monotonic()
    for i in range(frames):
        img = np.zeros((48, 64, 3), np.uint8)
        img[..., 1] = (i * 8) % 256
        img[:24, :32] = 255
        for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            c.mux(p)
        delay = t0 + (i + 1) / fps - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    if stall:
        time.sleep(120)  # the connection stays open, nothing more is sent
    c.close()


def main(argv: list[str]) -> None:
    proto, frames, fps, after = argv[0], int(argv[1]), float(argv[2]), argv[3]
    if proto == "tcp":
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        print(srv.getsockname()[1], flush=True)
        conn, _ = srv.accept()
        srv.close()  # later reconnects are refused
        out = conn.makefile("wb")
    else:
        print(argv[4], flush=True)
        out = _UDPWriter(int(argv[4]))
    try:
        serve(out, frames, fps, stall=after == "stall")
    except (BrokenPipeError, ConnectionResetError):
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
