"""Text of an example as a prompt and of its answer as the target continuation, for one tokenizer.

Multiple-choice and benchmark free-text examples read the same for every model ("...\\nAnswer:").
Instruction examples go through the model's own chat template when it has one: the prompt then differs
between tokenizers, which is why alignment measures answer positions from the end of the prompt. Their
answers end in the model's end-of-turn token (`end_of_turn_id`), so that a trained model learns to stop.

A system prompt (`data.system_prompt`, `clients.N.system_prompt`) is a party's way of rendering chat
examples, not part of the data: it goes into every prompt it trains and is evaluated on, and an example
with a system turn of its own keeps that one. NO_SYSTEM ("none") removes a template's default system
message (SmolLM2 writes one into every conversation that has none): such a template gets an empty system
turn, one without a default gets none.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from fedmkt.data.questions import LETTERS, Question


NO_SYSTEM = "none"
_MARK = "\x1fFEDMKT-ANSWER\x1f"  # text no template writes: finds where an assistant turn's content ends


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


def _chat(tokenizer: PreTrainedTokenizerBase, turns, **kwargs) -> str:
    return tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in turns], tokenize=False, **kwargs)


def end_of_turn_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The token that ends a model's answer: the special token its chat template writes right after an
    assistant turn's text (`<|im_end|>`, Gemma's `<end_of_turn>`), else its EOS (None: it has neither)."""
    if getattr(tokenizer, "chat_template", None):
        text = _chat(tokenizer, [("user", "?"), ("assistant", _MARK)])
        after = text[text.rindex(_MARK) + len(_MARK):] if _MARK in text else ""
        ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
        if ids and ids[0] in tokenizer.all_special_ids + list(getattr(tokenizer, "added_tokens_decoder", {})):
            return int(ids[0])
    return tokenizer.eos_token_id


def _with_system(turns: tuple, system: str | None, tokenizer: PreTrainedTokenizerBase) -> tuple:
    if system is None or (turns and turns[0][0] == "system"):
        return turns
    if system != NO_SYSTEM:
        return (("system", system), *turns)
    # A template that writes a default system message writes more without a system turn than with an empty one.
    probe = (("user", "?"),)
    has_default = len(_chat(tokenizer, probe)) > len(_chat(tokenizer, (("system", ""), *probe)))
    return (("system", ""), *turns) if has_default else turns


def render(q: Question, tokenizer: PreTrainedTokenizerBase | None = None, system: str | None = None) -> Rendered:
    """system: the party's system prompt for chat examples (None: as the data and template say; NO_SYSTEM: none)."""
    if uses_chat_template(q, tokenizer):
        prompt = _chat(tokenizer, _with_system(q.turns, system, tokenizer), add_generation_prompt=True)
        return Rendered(prompt, q.references[0], add_special_tokens=False)
    return Rendered(prompt_text(q), answer_text(q), add_special_tokens=True)
