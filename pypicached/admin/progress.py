"""A one-line progress bar for the admin command, drawn only on a terminal."""

from __future__ import annotations

import time
from typing import TextIO

from pypicached.ops.summary import human_bytes

WIDTH = 30
#: Redraw at most this often, so a fast loop is not slowed by the terminal.
EVERY = 0.1


class Progress:
    """Counts bytes (and items) toward a total; on a terminal, redraws a bar as it goes."""

    def __init__(self, stream: TextIO, label: str, total_bytes: int, total_items: int) -> None:
        self._stream = stream
        self._label = label
        self.total_bytes = total_bytes
        self.total_items = total_items
        self.done_bytes = 0
        self.done_items = 0
        self._drawn = 0.0
        self.enabled = stream.isatty()

    def advance(self, nbytes: int = 0, items: int = 0) -> None:
        self.done_bytes += nbytes
        self.done_items += items
        if self.enabled and (items or time.monotonic() - self._drawn >= EVERY):
            self._draw()

    def _draw(self) -> None:
        self._drawn = time.monotonic()
        ratio = (
            self.done_bytes / self.total_bytes
            if self.total_bytes
            else (self.done_items / self.total_items if self.total_items else 1.0)
        )
        ratio = min(1.0, ratio)
        filled = int(ratio * WIDTH)
        self._stream.write(
            f"\r{self._label} [{'#' * filled}{'.' * (WIDTH - filled)}] {ratio * 100:5.1f}% "
            f"{self.done_items}/{self.total_items} {human_bytes(self.done_bytes)}\x1b[K"
        )
        self._stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self._draw()
            self._stream.write("\n")
            self._stream.flush()
