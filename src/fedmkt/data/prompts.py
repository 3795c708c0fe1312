"""Text of a question as a prompt and of its answer as the target continuation."""

from __future__ import annotations

from fedmkt.data.questions import LETTERS, Question


def prompt_text(q: Question) -> str:
    if q.free_text:
        return f"{q.question}\nAnswer:"
    options = "\n".join(f"{letter}. {choice}" for letter, choice in zip(LETTERS, q.choices))
    return f"{q.question}\n{options}\nAnswer:"


def choice_text(q: Question, index: int) -> str:
    # The answer carries its text as well as its letter: more label tokens, so more knowledge per example.
    return f" {LETTERS[index]}. {q.choices[index]}"


def answer_text(q: Question) -> str:
    return f" {q.references[0]}" if q.free_text else choice_text(q, q.answer)
