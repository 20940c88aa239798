"""Progress of a batch run: a bar on a terminal, a plain line every few seconds otherwise.

AWS Batch sends stderr to CloudWatch Logs, where a carriage-return bar is noise; a line
such as ``dsc score: 4,200,000 / 10,000,000 rows (42%), 850,000 rows/s, 3 rejected``
every ``interval`` seconds is what an on-call engineer wants to grep.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]

BAR_WIDTH = 30


class Progress:
    """Renders rows done out of ``total`` (None when unknown until the end)."""

    def __init__(
        self,
        total: int | None,
        *,
        label: str = "dsc score",
        stream: TextIO | None = None,
        tty: bool | None = None,
        interval: float = 10.0,
    ) -> None:
        self.total = total
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = 0.2 if self.tty else interval
        self.started = time.monotonic()
        self._last = self.started
        self.done = 0
        self.rejected = 0

    def update(self, done: int, rejected: int = 0, *, total: int | None = None) -> None:
        """Record ``done`` rows so far (absolute, not a delta); redraw if it is time to."""
        self.done, self.rejected = done, rejected
        if total is not None:
            self.total = total
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._render(now, final=False)

    def close(self) -> None:
        """Draw the final state (and end the bar's line)."""
        self._render(time.monotonic(), final=True)

    def _render(self, now: float, *, final: bool) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        counts = f"{self.done:,}" + (f" / {self.total:,}" if self.total else "") + " rows"
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        tail = f", {rate:,.0f} rows/s, {self.rejected:,} rejected"
        if self.tty:
            bar = ""
            if self.total:
                filled = min(BAR_WIDTH, int(BAR_WIDTH * self.done / self.total))
                bar = "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "] "
            eta = ""
            if self.total and rate > 0 and not final:
                eta = f", ETA {max(0.0, (self.total - self.done) / rate):.0f}s"
            line = f"\r{self.label}: {bar}{counts}{pct}{tail}{eta}"
            self.stream.write(line + ("\n" if final else "\x1b[K"))
        else:
            done = f" done in {elapsed:.1f}s" if final else ""
            self.stream.write(f"{self.label}: {counts}{pct}{tail}{done}\n")
        self.stream.flush()
