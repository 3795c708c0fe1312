"""Multiple-choice evaluation by log-likelihood, following lm-eval-harness conventions.

scoring="text": each choice's continuation (" B. <choice>") is scored;
    acc: highest summed log-probability; acc_norm: the same divided by its length in characters.
scoring="letter": the continuation is the letter alone (" B"), as lm-eval scores MMLU. When every
    letter is one token, one forward pass of the prompt scores all choices (4x cheaper than text);
    the continuations have equal length, so there is no acc_norm (it would repeat acc), as in lm-eval.
Free-text questions are answered greedily (benchmark prompts: up to the first newline; chat prompts: up
to the end of the model's turn) and scored against the best reference by ROUGE-L F1, the longest common
subsequence of lower-cased alphanumeric words (the tokenisation of Google's rouge-score), computed by
rapidfuzz, and by exact match after SQuAD's answer normalisation (lower case, no punctuation or articles,
single spaces; Rajpurkar et al., 2016, official evaluation script).
"""

from __future__ import annotations

import re

import numpy as np
import torch
from rapidfuzz.distance import LCSseq
from transformers import PreTrainedTokenizerBase

from fedmkt.data.encoding import batches, encode
from fedmkt.data.questions import LETTERS, Question
from fedmkt.data.prompts import choice_text, prompt_text, render, uses_chat_template
from fedmkt.records import PER_QUESTION, PartyScores
from fedmkt.stats import KINDS
from fedmkt.training import ComputeClock, tail_logits


def primary_metric(result: dict) -> str:
    """The figure a domain is ranked by: accuracy for multiple choice, ROUGE-L for free text."""
    return "acc" if "acc" in result else "rougeL"


def mean_kinds(results: dict[str, dict]) -> list[str]:
    """The primary metrics among these domain results, one mean column each (stats.KINDS order): accuracies
    and ROUGE-L are never averaged together."""
    return [m for m in KINDS if any(primary_metric(r) == m for r in results.values())]


def metric_name(result: dict) -> str:
    return "acc" if primary_metric(result) == "acc" else "ROUGE-L"


def summarize(domains: dict[str, dict], own: dict | None = None) -> PartyScores:
    """A party's scores with their means: each metric over the domains that report it, and "score", the
    mean of each domain's primary metric (accuracy, or ROUGE-L for free-text domains). `own`: a client's
    own held-out set, kept apart so that every party's means cover the same sets."""
    scores = list(domains.values())
    metrics = sorted({m for s in scores for m in s if m not in ("n", PER_QUESTION)})
    mean = {m: float(np.mean([s[m] for s in scores if m in s])) for m in metrics}
    mean["score"] = float(np.mean([s[primary_metric(s)] for s in scores])) if scores else 0.0
    return PartyScores(dict(domains), mean, own)


def _single_token_letters(tokenizer: PreTrainedTokenizerBase, count: int) -> list[int] | None:
    ids = [tokenizer(f" {letter}", add_special_tokens=False)["input_ids"] for letter in LETTERS[:count]]
    return [i[0] for i in ids] if all(len(i) == 1 for i in ids) else None


def _continuation(q: Question, index: int, scoring: str) -> str:
    return choice_text(q, index) if scoring == "text" else f" {LETTERS[index]}"


@torch.no_grad()
def _letter_scores(model, tokenizer, questions, letter_ids, max_length, batch_size, clock) -> dict:
    device = next(model.parameters()).device
    rows = [encode(tokenizer, q.uid, prompt_text(q), f" {LETTERS[q.answer]}", max_length) for q in questions]
    correct = []
    at = 0
    for chunk, batch in batches(rows, batch_size * 4, tokenizer.pad_token_id):
        batch = batch.to(device)
        with clock.measure():
            logits = tail_logits(model, batch)[:, -1].float()  # the prompt's last position: predicts the letter
        for row, q in zip(logits, questions[at:at + len(chunk)]):
            correct.append(float(row[letter_ids[:len(q.choices)]].argmax().item() == q.answer))
        at += len(chunk)
    return {"acc": float(np.mean(correct)) if correct else 0.0, "n": len(questions), PER_QUESTION: correct}


@torch.no_grad()
def evaluate_multiple_choice(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, questions: list[Question],
                             max_length: int, batch_size: int, clock: ComputeClock | None = None,
                             scoring: str = "letter") -> dict:
    model.eval()
    device = next(model.parameters()).device
    clock = clock or ComputeClock()
    if scoring == "letter":
        letter_ids = _single_token_letters(tokenizer, max((len(q.choices) for q in questions), default=0))
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
    correct, correct_norm = [], 0
    at = 0
    for q in questions:
        k = len(q.choices)
        s = flat[at:at + k]
        lengths = np.array([len(_continuation(q, i, scoring)) for i in range(k)], dtype=np.float64)
        correct.append(float(np.argmax(s) == q.answer))
        correct_norm += int(np.argmax(s / lengths) == q.answer)
        at += k
    n = max(len(questions), 1)
    result = {"acc": sum(correct) / n, "n": len(questions), PER_QUESTION: correct}
    if scoring == "text":  # letters are equal-length continuations: acc_norm would repeat acc
        result["acc_norm"] = correct_norm / n
    return result


def rouge_l(candidate: str, reference: str) -> float:
    cand, ref = re.findall(r"[a-z0-9]+", candidate.lower()), re.findall(r"[a-z0-9]+", reference.lower())
    if not cand or not ref:
        return 0.0
    common = LCSseq.similarity(cand, ref)
    if common == 0:
        return 0.0
    precision, recall = common / len(cand), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def normalize_answer(text: str) -> str:
    text = re.sub(r"[^\w\s]", " ", text.lower())
    return " ".join(word for word in text.split() if word not in ("a", "an", "the"))


def exact_match(candidate: str, reference: str) -> float:
    return float(normalize_answer(candidate) == normalize_answer(reference))


@torch.no_grad()
def generate_answers(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, questions: list[Question],
                     max_length: int, batch_size: int, max_new_tokens: int = 48,
                     clock: ComputeClock | None = None) -> list[str]:
    """Greedy answers: to the end of the model's turn for chat-template prompts, else to the first newline
    (benchmark prompts end in "Answer:" and their answers take one line)."""
    model.eval()
    device = next(model.parameters()).device
    clock = clock or ComputeClock()
    # Left padding, and left truncation: a long prompt keeps its end (the question and "Answer:"), as in training.
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    cut, tokenizer.truncation_side = tokenizer.truncation_side, "left"
    chat = bool(questions) and uses_chat_template(questions[0], tokenizer)
    # Stop a row at end of text, and (benchmark prompts) at its first newline token.
    newline = [] if chat else tokenizer("\n", add_special_tokens=False)["input_ids"][-1:]
    stops = sorted({tokenizer.eos_token_id, *newline} - {None})
    answers = []
    try:
        for start in range(0, len(questions), batch_size):
            texts = [render(q, tokenizer) for q in questions[start:start + batch_size]]
            enc = tokenizer([t.prompt for t in texts], return_tensors="pt", padding=True, truncation=True,
                            max_length=max_length, add_special_tokens=texts[0].add_special_tokens).to(device)
            with clock.measure():
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=stops)
            for row in out[:, enc["input_ids"].shape[1]:]:
                answer = tokenizer.decode(row, skip_special_tokens=True).strip()
                answers.append(answer if chat else answer.split("\n")[0])
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = side, cut
    return answers


def evaluate_free_text(model, tokenizer, questions: list[Question], max_length: int, batch_size: int,
                       clock: ComputeClock | None = None) -> dict:
    answers = generate_answers(model, tokenizer, questions, max_length, batch_size, clock=clock)
    scores = [max(rouge_l(a, r) for r in q.references) for a, q in zip(answers, questions)]
    exact = [max(exact_match(a, r) for r in q.references) for a, q in zip(answers, questions)]
    return {"rougeL": float(np.mean(scores)) if scores else 0.0,
            "exact_match": float(np.mean(exact)) if exact else 0.0, "n": len(questions),
            PER_QUESTION: [float(x) for x in scores]}


def evaluate_questions(model, tokenizer, questions: list[Question], max_length: int, batch_size: int,
                       clock: ComputeClock | None = None, scoring: str = "letter") -> dict:
    """One evaluation set (one domain): multiple choice or free text."""
    if questions and questions[0].free_text:
        return evaluate_free_text(model, tokenizer, questions, max_length, batch_size, clock)
    return evaluate_multiple_choice(model, tokenizer, questions, max_length, batch_size, clock, scoring)
