"""BIG-bench JSON tasks, taken from the `bigbench` source distribution on PyPI.

The sdist (about 360 MB) carries every task's task.json under bigbench/benchmark_tasks/. We fetch it
once (fedmkt.data.sdist), extract only the task files asked for into the fedmkt cache, and delete the
archive. Set FEDMKT_BIGBENCH_SDIST to an already downloaded archive to skip the download. PyPI stopped
serving the 1.0.0 archive in December 2026 (only the 0.0.1 placeholder is left): on a machine without the
tasks cached, BIG-bench needs that archive from elsewhere. The default run uses VADER's sentences
(fedmkt.data.vader) instead.

A task is named by its folder under benchmark_tasks ("social_iqa",
"natural_instructions/subtask026_drop_question_generation"); that name is also its domain.
Examples with `target_scores` become multiple-choice questions (choices shuffled per example with a
fixed seed, since many tasks list the right answer first); examples with `target` become free-text
questions scored by ROUGE-L.
"""

from __future__ import annotations

import json
import random
import zlib
from pathlib import Path

from fedmkt.data.questions import LETTERS, Question
from fedmkt.data.sdist import extract_files, sdist_archive
from fedmkt.models import cache_root

VERSION = "1.0.0"
_PREFIX = f"bigbench-{VERSION}/bigbench/benchmark_tasks/"


def _cached(task: str) -> Path:
    return cache_root() / "bigbench" / VERSION / task / "task.json"


def ensure_tasks(tasks: list[str]) -> dict[str, Path]:
    """Paths of the tasks' task.json in the cache, extracting the missing ones in one pass over the sdist."""
    missing = [t for t in tasks if not _cached(t).is_file()]
    if missing:
        with sdist_archive("bigbench", VERSION, "FEDMKT_BIGBENCH_SDIST") as archive:
            absent = extract_files(archive, {_PREFIX + t + "/task.json": _cached(t) for t in missing})
        if absent:
            tasks = sorted(name[len(_PREFIX):-len("/task.json")] for name in absent)
            raise FileNotFoundError(f"no BIG-bench task {tasks} in bigbench {VERSION}")
    return {t: _cached(t) for t in tasks}


def _uid(task: str, index: int) -> int:
    # Disjoint from MMLU's line numbers (< 10^5) and from other tasks'.
    return (1 + zlib.crc32(task.encode()) % 10**6) * 10**5 + index


def parse_task(task: str, data: dict) -> list[Question]:
    prefix = data.get("task_prefix", "")
    questions = []
    for index, example in enumerate(data.get("examples", [])):
        text = (prefix + str(example.get("input", ""))).strip()
        if not text:
            continue
        uid = _uid(task, index)
        scores = example.get("target_scores")
        if scores:
            choices = list(scores)
            best = max(scores.values())
            if best <= 0 or sum(v == best for v in scores.values()) != 1 or len(choices) > len(LETTERS):
                continue  # no single right answer: not a multiple-choice question for acc
            right = choices[[scores[c] for c in choices].index(best)]
            random.Random(uid).shuffle(choices)
            questions.append(Question(uid=uid, domain=task, subject=task, question=text,
                                      choices=tuple(str(c).strip() for c in choices), answer=choices.index(right)))
        elif example.get("target"):
            target = example["target"]
            references = tuple(str(t).strip() for t in (target if isinstance(target, list) else [target]))
            questions.append(Question(uid=uid, domain=task, subject=task, question=text, references=references))
    return questions


def load_bigbench(tasks: list[str]) -> list[Question]:
    paths = ensure_tasks(tasks)
    questions = []
    for task, path in paths.items():
        questions += parse_task(task, json.loads(path.read_text(encoding="utf-8")))
    return questions
