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
    def finish(self, line: str) -> None:
        _logged(line)


class LineReporter:
    """One plain line per finished task and per message, to standard output (server logs), each stamped with
    the UTC time of day: a federation's log is read beside its clients' logs."""

    def task(self, description: str, total: int) -> Task:
        return _LineTask()

    def message(self, text: str, level: str = "info") -> None:
        _logged(f"{level.upper()}: {text}" if level in ("warning", "heading") else text)
