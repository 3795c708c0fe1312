"""Text of an example as a prompt and of its answer as the target continuation, for one tokenizer.

Multiple-choice and benchmark free-text examples read the same for every model ("...\\nAnswer:").
Instruction examples go through the model's own chat template when it has one: the prompt then differs
between tokenizers, which is why alignment measures answer positions from the end of the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from fedmkt.data.questions import LETTERS, Question


@dataclass(frozen=True)
class Rendered:
    prompt: str
    answer: str
    add_special_tokens: bool  # False when a chat template already wrote them into the prompt


def prompt_text(q: Question) -> str:
    if q.free_text or q.cloze:
        return f"{q.question}\nAnswer:"
    options = "\n".join(f"{letter}. {choice}" for letter, choice in zip(LETTERS, q.choices))
    return f"{q.question}\n{options}\nAnswer:"


def choice_text(q: Question, index: int) -> str:
    if q.cloze:
        return f" {q.choices[index]}"
    # The answer carries its text as well as its letter: more label tokens, so more knowledge per example.
    return f" {LETTERS[index]}. {q.choices[index]}"


def answer_text(q: Question) -> str:
    return f" {q.references[0]}" if q.free_text else choice_text(q, q.answer)


def uses_chat_template(q: Question, tokenizer: PreTrainedTokenizerBase | None) -> bool:
    return q.chat and tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def render(q: Question, tokenizer: PreTrainedTokenizerBase | None = None) -> Rendered:
    if uses_chat_template(q, tokenizer):
        prompt = tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in q.turns],
                                               add_generation_prompt=True, tokenize=False)
        return Rendered(prompt, q.references[0], add_special_tokens=False)
    return Rendered(prompt_text(q), answer_text(q), add_special_tokens=True)
