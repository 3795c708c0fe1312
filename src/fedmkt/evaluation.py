"""Multiple-choice evaluation by log-likelihood, following lm-eval-harness conventions.

scoring="text": each choice's continuation (" B. <choice>") is scored;
    acc: highest summed log-probability; acc_norm: the same divided by its length in characters.
scoring="letter": the continuation is the letter alone (" B"), as lm-eval scores MMLU. When every
    letter is one token, one forward pass of the prompt scores all choices (4x cheaper than text);
    the continuations have equal length, so acc_norm equals acc.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from fedmkt.data.encoding import batches, encode
from fedmkt.data.mmlu import Question
from fedmkt.data.mmlu import LETTERS
from fedmkt.data.prompts import choice_text, prompt_text
from fedmkt.training import ComputeClock, tail_logits


def _single_token_letters(tokenizer: PreTrainedTokenizerBase) -> list[int] | None:
    ids = [tokenizer(f" {letter}", add_special_tokens=False)["input_ids"] for letter in LETTERS]
    return [i[0] for i in ids] if all(len(i) == 1 for i in ids) else None


def _continuation(q: Question, index: int, scoring: str) -> str:
    return choice_text(q, index) if scoring == "text" else f" {LETTERS[index]}"


@torch.no_grad()
def _letter_scores(model, tokenizer, questions, letter_ids, max_length, batch_size, clock) -> dict:
    device = next(model.parameters()).device
    rows = [encode(tokenizer, q.uid, prompt_text(q), f" {LETTERS[q.answer]}", max_length) for q in questions]
    correct = 0
    at = 0
    for chunk, batch in batches(rows, batch_size * 4, tokenizer.pad_token_id):
        batch = batch.to(device)
        with clock.measure():
            logits = tail_logits(model, batch)[:, -1].float()  # the prompt's last position: predicts the letter
        picks = logits[:, letter_ids].argmax(-1).cpu().numpy()
        correct += int(sum(p == q.answer for p, q in zip(picks, questions[at:at + len(chunk)])))
        at += len(chunk)
    n = max(len(questions), 1)
    return {"acc": correct / n, "acc_norm": correct / n, "n": len(questions)}


@torch.no_grad()
def evaluate_multiple_choice(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, questions: list[Question],
                             max_length: int, batch_size: int, clock: ComputeClock | None = None,
                             scoring: str = "letter") -> dict:
    model.eval()
    device = next(model.parameters()).device
    clock = clock or ComputeClock()
    if scoring == "letter":
        letter_ids = _single_token_letters(tokenizer)
        if letter_ids is not None:
            return _letter_scores(model, tokenizer, questions, letter_ids, max_length, batch_size, clock)
    rows = []
    for q in questions:
        prompt = prompt_text(q)
        rows.extend(encode(tokenizer, q.uid, prompt, _continuation(q, i, scoring), max_length)
                    for i in range(len(q.choices)))
    scores = []
    # Batch whole questions together: the prompt is shared by its choices.
    per_batch = max(1, batch_size) * len(questions[0].choices) if questions else 1
    for _, batch in batches(rows, per_batch, tokenizer.pad_token_id):
        batch = batch.to(device)
        with clock.measure():
            logp = torch.log_softmax(tail_logits(model, batch).float(), dim=-1)
        token_logp = logp.gather(-1, batch.labels.unsqueeze(-1)).squeeze(-1) * batch.loss_mask
        scores.append(token_logp.sum(1).cpu().numpy())
    flat = np.concatenate(scores) if scores else np.zeros(0)
    correct = correct_norm = 0
    at = 0
    for q in questions:
        k = len(q.choices)
        s = flat[at:at + k]
        lengths = np.array([len(_continuation(q, i, scoring)) for i in range(k)], dtype=np.float64)
        correct += int(np.argmax(s) == q.answer)
        correct_norm += int(np.argmax(s / lengths) == q.answer)
        at += k
    n = max(len(questions), 1)
    return {"acc": correct / n, "acc_norm": correct_norm / n, "n": len(questions)}
