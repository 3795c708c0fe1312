"""Free-text instruction tasks with reference answers, from the OpenAI Evals registry (the `evals` sdist on PyPI).

The paper's generation results are on Super-NaturalInstructions subtasks, which reached this project only
inside the bigbench sdist that PyPI no longer serves. The Evals registry (evals 3.0.1.post1, MIT licence)
ships contributed tasks as `samples.jsonl` files of chat turns (`input`) and a reference answer (`ideal`). Two
of them are English generation tasks of Super-NaturalInstructions' own kinds, with enough rows for a split:
    openai_evals/abstract2title     write a scientific article's title from its abstract (254 rows;
                                    Super-NaturalInstructions' "Title Generation" category)
    openai_evals/consensus_summary  answer a question from a list of research claims in a sentence or two
                                    (362 rows; its "Summarization" category)
Both become instruction questions (system and user turn, rendered with each model's chat template), trained on
the reference and scored by ROUGE-L of a greedy answer. As the paper did for its tasks (App. D.2: outputs of
at least 11 tokens), an example is kept only if its reference has at least MIN_REFERENCE_TOKENS tokens,
counted as ROUGE-L counts them (lower-cased alphanumeric words), so that every party keeps the same rows
whatever its tokenizer. Rows repeated verbatim are one example: 242 and 293 rows are left.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from fedmkt.data.questions import Question, flatten_turns
from fedmkt.data.sdist import extract_files, sdist_archive
from fedmkt.evaluation import rouge_tokens
from fedmkt.models import cache_root

VERSION = "3.0.1.post1"
VARIABLE = "FEDMKT_OPENAI_EVALS_SDIST"
_PREFIX = f"evals-{VERSION}/evals/registry/data/"
TASKS = ("abstract2title", "consensus_summary")
DOMAINS = tuple(f"openai_evals/{task}" for task in TASKS)
MIN_REFERENCE_TOKENS = 11
_UID_BASE = 3 * 10**11  # above VADER's uids (2e11 + domain * 1e6), below own files' (2^40)


def _cached(task: str) -> Path:
    return cache_root() / "openai_evals" / VERSION / task / "samples.jsonl"


def ensure_files() -> dict[str, Path]:
    """The tasks' samples.jsonl in the cache, extracted from the sdist the first time."""
    if not all(_cached(t).is_file() for t in TASKS):
        with sdist_archive("evals", VERSION, VARIABLE) as archive:
            absent = extract_files(archive, {f"{_PREFIX}{task}/samples.jsonl": _cached(task) for task in TASKS})
        if absent:
            raise FileNotFoundError(f"{archive} lacks {absent}: not the evals {VERSION} sdist")
    return {t: _cached(t) for t in TASKS}


def parse_samples(task: str, text: str) -> list[Question]:
    """One task's rows as questions: those with chat turns and a long enough reference (others are skipped)."""
    domain = f"openai_evals/{task}"
    offset = _UID_BASE + TASKS.index(task) * 10**6
    questions, seen = [], set()
    for index, line in enumerate(text.splitlines()):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        turns = row.get("input") if isinstance(row, dict) else None
        ideal = row.get("ideal") if isinstance(row, dict) else None
        references = tuple(str(r).strip() for r in (ideal if isinstance(ideal, list) else [ideal]) if r)
        if not (isinstance(turns, list) and turns and references and all(
                isinstance(t, dict) and isinstance(t.get("role"), str) and isinstance(t.get("content"), str)
                for t in turns)):
            continue
        if len(rouge_tokens(references[0])) < MIN_REFERENCE_TOKENS:
            continue
        turns = tuple((t["role"], t["content"]) for t in turns)
        if (turns, references) in seen:
            continue
        seen.add((turns, references))
        questions.append(Question(uid=offset + index, domain=domain, subject=domain, question=flatten_turns(turns),
                                  references=references, turns=turns))
    return questions


@lru_cache(maxsize=1)
def _all() -> tuple[Question, ...]:
    paths = ensure_files()
    return tuple(q for task in TASKS for q in parse_samples(task, paths[task].read_text(encoding="utf-8")))


def load_openai_evals(domains: list[str] | None = None) -> list[Question]:
    """The questions of the named domains (both by default)."""
    wanted = set(domains or DOMAINS)
    return [q for q in _all() if q.domain in wanted]
