"""Text of a question as a prompt and of its answer as the target continuation."""

from __future__ import annotations

from fedmkt.data.mmlu import LETTERS, Question


def prompt_text(q: Question) -> str:
    options = "\n".join(f"{letter}. {choice}" for letter, choice in zip(LETTERS, q.choices))
    return f"{q.question}\n{options}\nAnswer:"


def choice_text(q: Question, index: int) -> str:
    # The answer carries its text as well as its letter: more label tokens, so more knowledge per example.
    return f" {LETTERS[index]}. {q.choices[index]}"


def answer_text(q: Question) -> str:
    return choice_text(q, q.answer)
