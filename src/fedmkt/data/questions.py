"""A labelled example, whatever set it comes from, in one of two shapes.

multiple choice: a question, its choices and the right one's index; scored by log-likelihood (acc, acc_norm).
    Lettered (MMLU's way: choices listed as "A. ...", the answer " B. <choice>") or cloze (lm-eval's way for
    RTE, BoolQ, ARC: choices not listed, the answer is the choice's own text).
instruction / free text: a prompt (or chat turns) and the reference responses; trained on the response
    tokens only, scored by ROUGE-L and exact match of a greedy answer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import astuple, dataclass

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Question:
    uid: int  # stable across runs and parties, unique across sources
    domain: str  # what draws balance over and presets filter by (an MMLU group, a BIG-bench task, a file)
    subject: str
    question: str  # the prompt text (chat turns flattened, for models without a chat template)
    choices: tuple[str, ...] = ()  # empty for free text
    answer: int = -1  # index into choices; -1 for free text
    references: tuple[str, ...] = ()  # acceptable free-text answers (the first is the training target)
    turns: tuple[tuple[str, str], ...] = ()  # (role, content) before the response: rendered with a chat template
    cloze: bool = False  # multiple choice answered by the choice's text, without letters

    @property
    def free_text(self) -> bool:
        return not self.choices

    @property
    def chat(self) -> bool:
        """An instruction example: rendered with the model's chat template when it has one."""
        return bool(self.turns)


def flatten_turns(turns: tuple[tuple[str, str], ...]) -> str:
    """Chat turns as one prompt text, for models without a chat template: a lone turn as it is, else each
    turn after its role."""
    flat = turns[0][1] if len(turns) == 1 else "\n".join(f"{role.capitalize()}: {text}" for role, text in turns)
    return flat.strip()


def set_hash(questions: list[Question]) -> str:
    """Content hash of a set of examples, in order: parties compare it to know they hold the same public set."""
    return set_sha256(questions)[:16]


def set_sha256(questions: list[Question]) -> str:
    """The full SHA-256 of a set of examples, in order: what a client pins its public set to."""
    digest = hashlib.sha256()
    for q in questions:
        fields = astuple(q)
        fields = fields if q.cloze else fields[:-1]  # lettered sets keep the hash they had before cloze existed
        digest.update(json.dumps(fields, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()
