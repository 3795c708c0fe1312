"""The command line's rendering of progress reports: rich bars on a terminal, plain lines in a log.

On a terminal each training loop or evaluation shows a transient bar (loss, steps, elapsed) that leaves
one line when it ends; without a terminal (a log file, CI) those lines, the messages and a progress line
every 30 s of a long task (done, rate, time left) are printed, unwrapped: one line each, whatever its
length. FEDMKT_PROGRESS=1 forces the bars.
"""

from __future__ import annotations

import os

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from fedmkt.progress import Pace

STYLES = {"info": "{}", "warning": "[yellow]{}[/]", "success": "[bold green]{}[/]"}


class _Bar:
    def __init__(self, progress: Progress | None, console: Console, description: str, total: int):
        self.progress, self.console = progress, console
        self.task: TaskID | None = progress.add_task(description, total=total, info="") if progress else None
        self.pace = Pace(description, total)

    def advance(self, steps: int = 1, info: str = "") -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=steps, info=info)
        else:
            line = self.pace.advance(steps)
            if line is not None:
                self.console.print(line + (f", {info}" if info else ""), markup=False, highlight=False)

    def finish(self, line: str) -> None:
        """Drop a finished bar and leave one line in its place, so the display stays short."""
        if self.progress is not None:
            self.progress.remove_task(self.task)
        self.console.print(line, markup=False, highlight=False)


class ConsoleReporter:
    """A Reporter (fedmkt.progress) printing to a rich Console; use it as a context manager."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console()
        bars = self.console.is_terminal or os.environ.get("FEDMKT_PROGRESS") == "1"
        if not self.console.is_terminal:
            self.console.soft_wrap = True  # a log file gets whole lines (a path is never split), not 80 columns
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), transient=True,
                                 console=self.console) if bars else None

    def __enter__(self) -> "ConsoleReporter":
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def task(self, description: str, total: int) -> _Bar:
        return _Bar(self.progress, self.console, description, total)

    def message(self, text: str, level: str = "info") -> None:
        if level == "heading":
            self.console.rule(escape(text))
        else:
            self.console.print(STYLES.get(level, "{}").format(escape(text)))
