"""A labelled example, whatever set it comes from: multiple choice, or free text scored by ROUGE-L."""

from __future__ import annotations

from dataclasses import dataclass

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Question:
    uid: int  # stable across runs and unique across sources
    domain: str  # what a client can hold and an evaluation set is drawn from (an MMLU group, a BIG-bench task)
    subject: str
    question: str
    choices: tuple[str, ...] = ()  # empty for a free-text task
    answer: int = -1  # index into choices; -1 for a free-text task
    references: tuple[str, ...] = ()  # acceptable free-text answers (ROUGE-L takes the best)

    @property
    def free_text(self) -> bool:
        return not self.choices
