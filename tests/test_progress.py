"""What a log file shows: whole lines, and long tasks moving."""

import io

from rich.console import Console

from fedmkt import progress
from fedmkt.display import ConsoleReporter
from fedmkt.progress import SILENT, Pace


class Recorder:
    """A Reporter that keeps every message line."""

    def __init__(self):
        self.lines = []

    def task(self, description, total):
        return SILENT.task(description, total)

    def message(self, text, level="info"):
        self.lines.append(text)


def test_a_long_task_reports_done_rate_and_time_left_at_most_every_interval():
    now = [0.0]
    pace = Pace("server: evaluation on quiz", 100, every_s=30, clock=lambda: now[0])
    now[0] = 10.0
    assert pace.advance(20) is None  # not due yet
    now[0] = 40.0
    assert pace.advance(20) == "server: evaluation on quiz: 40/100 (1.00/s, about 60s left)"
    now[0] = 50.0
    assert pace.advance(10) is None  # 10 s after the last line
    now[0] = 100.0
    assert pace.advance(50) is None  # done: the task's own closing line says so


def test_a_log_file_gets_whole_lines_and_progress_lines(monkeypatch):
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=80)
    path = "/data/clinics/" + "very-long-folder-name/" * 8 + "notes.jsonl"
    monkeypatch.setattr(progress, "PROGRESS_EVERY_S", 0.0)
    with ConsoleReporter(console) as reporter:
        reporter.message(f"reading {path}")
        task = reporter.task("metric: private SFT", 3)
        task.advance(1, "loss 1.234")
        task.finish("metric: private SFT: 3 steps")
    lines = out.getvalue().splitlines()
    assert lines[0] == f"reading {path}"  # one line, though far wider than 80 columns
    assert lines[1].startswith("metric: private SFT: 1/3 (") and lines[1].endswith("left), loss 1.234")
    assert lines[2] == "metric: private SFT: 3 steps"
