"""How the algorithm reports what it is doing, without knowing who listens.

Parties and the coordinator call a `Reporter`; the command line renders it (rich bars on a terminal,
plain lines in a log file: `fedmkt.display`), tests and libraries use the silent default. The
algorithm never holds a display object.
"""

from __future__ import annotations

import time
from typing import Protocol


class Task(Protocol):
    def advance(self, steps: int = 1, info: str = "") -> None: ...

    def finish(self, line: str) -> None: ...


class Reporter(Protocol):
    def task(self, description: str, total: int) -> Task:
        """A unit of work of `total` steps (a training loop, an extraction pass)."""
        ...

    def message(self, text: str, level: str = "info") -> None:
        """One line for the reader; level is info, warning, success or heading."""
        ...


PROGRESS_EVERY_S = 30.0  # a log file gets a progress line at most this often per task


class Pace:
    """A task's progress as a log line (done, rate, time left), due at most every PROGRESS_EVERY_S: a log file
    shows a long evaluation or training loop moving without a line per step."""

    def __init__(self, description: str, total: int, every_s: float | None = None, clock=None):
        self.description, self.total = description, total
        self.every_s = PROGRESS_EVERY_S if every_s is None else every_s
        self.clock = clock or time.monotonic
        self.started = self.last = self.clock()
        self.done = 0

    def advance(self, steps: int) -> str | None:
        """Count `steps`; the line to print, when one is due."""
        self.done += steps
        now = self.clock()
        if now - self.last < self.every_s or self.done >= self.total:
            return None
        self.last = now
        rate = self.done / max(now - self.started, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        return f"{self.description}: {self.done}/{self.total} ({rate:.2f}/s, about {left:.0f}s left)"


class _SilentTask:
    def advance(self, steps: int = 1, info: str = "") -> None:
        pass

    def finish(self, line: str) -> None:
        pass


class SilentReporter:
    """Reports nothing: the default outside the command line."""

    def task(self, description: str, total: int) -> Task:
        return _SilentTask()

    def message(self, text: str, level: str = "info") -> None:
        pass


SILENT = SilentReporter()


def _logged(line: str) -> None:
    now = time.time()
    print(f"{time.strftime('%H:%M:%S', time.gmtime(now))}.{int(now % 1 * 1000):03d} {line}", flush=True)


class _LineTask(_SilentTask):
    def __init__(self, description: str, total: int):
        self.pace = Pace(description, total)

    def advance(self, steps: int = 1, info: str = "") -> None:
        line = self.pace.advance(steps)
        if line is not None:
            _logged(line)

    def finish(self, line: str) -> None:
        _logged(line)


class LineReporter:
    """One plain line per finished task and per message, and a progress line every PROGRESS_EVERY_S of a
    long task, to standard output (server logs), each stamped with the UTC time of day: a federation's log
    is read beside its clients' logs."""

    def task(self, description: str, total: int) -> Task:
        return _LineTask(description, total)

    def message(self, text: str, level: str = "info") -> None:
        _logged(f"{level.upper()}: {text}" if level in ("warning", "heading") else text)
