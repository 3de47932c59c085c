"""Process memory probes: the one place streamprune reads RSS and peak memory (pipeline, live, bench).

rss_mb(): resident set size now; peak_rss_mb(): the process's peak RSS (VmHWM, reset by PeakMemory.reset);
PeakMemory(device): peak since reset(), CUDA max allocated on a GPU device, else peak RSS. Linux reads
/proc/self/status; elsewhere getrusage's ru_maxrss stands in for both.
"""

from __future__ import annotations

import resource

import torch


class PeakMemory:
    """Peak memory since `reset()`: CUDA max allocated on a GPU device, else the process's peak RSS."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda" if device is not None else False
        self.device = device
        self.reset()

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:  # Linux: "5" resets VmHWM (the peak RSS) to the current RSS
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass

    def mb(self) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return _status_kb("VmHWM") / 1024


def _status_kb(key: str) -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def rss_mb() -> float:
    """Current resident set size of this process, MB."""
    return _status_kb("VmRSS") / 1024


def peak_rss_mb() -> float:
    """Peak resident set size of this process since start or the last PeakMemory.reset(), MB."""
    return _status_kb("VmHWM") / 1024
