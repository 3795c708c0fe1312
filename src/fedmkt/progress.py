"""How the algorithm reports what it is doing, without knowing who listens.

Parties and the coordinator call a `Reporter`; the command line renders it (rich bars on a terminal,
plain lines in a log file: `fedmkt.display`), tests and libraries use the silent default. The
algorithm never holds a display object.
"""

from __future__ import annotations

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


class _LineTask(_SilentTask):
    def finish(self, line: str) -> None:
        print(line, flush=True)


class LineReporter:
    """One plain line per finished task and per message, to standard output (server logs)."""

    def task(self, description: str, total: int) -> Task:
        return _LineTask()

    def message(self, text: str, level: str = "info") -> None:
        print(f"{level.upper()}: {text}" if level in ("warning", "heading") else text, flush=True)
