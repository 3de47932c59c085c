"""Time to first token: a generate() streamer that stamps when the first new token arrives."""

from __future__ import annotations

import time


class FirstTokenTimer:
    """A `model.generate(streamer=...)` streamer recording `first`, the time.perf_counter() at which the first
    new token arrives (generate's first put() is the prompt, the second the first new token); None until then."""

    def __init__(self):
        self.calls, self.first = 0, None

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 2 and self.first is None:
            self.first = time.perf_counter()

    def end(self) -> None:
        pass
