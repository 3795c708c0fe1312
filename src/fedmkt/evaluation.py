"""Multiple-choice evaluation by log-likelihood, following lm-eval-harness conventions.

scoring="text": each choice's continuation (" B. <choice>") is scored;
    acc: highest summed log-probability; acc_norm: the same divided by its length in characters.
scoring="letter": the continuation is the letter alone (" B"), as lm-eval scores MMLU. When every
    letter is one token, one forward pass of the prompt scores all choices (4x cheaper than text);
    the continuations have equal length, so there is no acc_norm (it would repeat acc), as in lm-eval.
Cloze questions (no letters) are always scored by their choices' text (" <choice>"), with acc_norm.
Free-text questions are answered greedily (benchmark prompts: up to the first newline; instruction
prompts: up to the model's end-of-turn token, which training puts after every answer) and scored against the best reference by ROUGE-L F1, the longest common
subsequence of lower-cased alphanumeric words (the tokenisation of Google's rouge-score), computed by
rapidfuzz, and by exact match after SQuAD's answer normalisation (lower case, no punctuation or articles,
single spaces; Rajpurkar et al., 2016, official evaluation script); "ended" is the share of answers that
stopped (a stop token) before max_new_tokens. The answers themselves come back under ANSWERS, in question
order, for the run folder (federation/store.py) and the report.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import torch
from rapidfuzz.distance import LCSseq
from transformers import PreTrainedTokenizerBase
from transformers.modeling_outputs import CausalLMOutputWithPast

from fedmkt.data.encoding import Encoded, batches, encode
from fedmkt.data.questions import LETTERS, Question
from fedmkt.data.prompts import choice_text, end_of_turn_id, prompt_text, render
from fedmkt.progress import SILENT, Task
from fedmkt.records import ANSWERS, PER_QUESTION, PartyScores
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
    metrics = sorted({m for s in scores for m in s if m not in ("n", PER_QUESTION, ANSWERS)})
    mean = {m: float(np.mean([s[m] for s in scores if m in s])) for m in metrics}
    mean["score"] = float(np.mean([s[primary_metric(s)] for s in scores])) if scores else 0.0
    return PartyScores(dict(domains), mean, own)


def majority_class(public: list[Question], evaluation: dict[str, list[Question]]) -> PartyScores | None:
    """The constant predictor every party could build from the labelled public set, answered to every question of
    an evaluation domain: for multiple choice the label commonest among the public questions of that domain (of
    the whole public set where it has none); for free text the most typical public reference of that domain,
    the one with the highest mean ROUGE-L against the others (what ROUGE-L credits without reading the prompt).
    None where no domain has such an answer."""
    def commonest(questions: list[Question]) -> str | None:
        labels = Counter(q.choices[q.answer] for q in questions if q.choices)
        return labels.most_common(1)[0][0] if labels else None  # ties: the first seen, in the set's order

    def most_typical(questions: list[Question]) -> str | None:
        references = [q.references[0] for q in questions if q.free_text and q.references]
        if len(references) < 2:
            return None
        mean = [np.mean([rouge_l(r, other) for j, other in enumerate(references) if j != i])
                for i, r in enumerate(references)]
        return references[int(np.argmax(mean))]  # ties: the first, in the set's order

    results = {}
    for domain, questions in evaluation.items():
        if questions and all(q.choices for q in questions):
            label = commonest([q for q in public if q.domain == domain]) or commonest(public)
            if label is None:
                continue
            correct = [float(q.choices[q.answer] == label) for q in questions]
            results[domain] = {"acc": float(np.mean(correct)), "n": len(questions), PER_QUESTION: correct}
        elif questions and all(q.free_text for q in questions):
            answer = most_typical([q for q in public if q.domain == domain])
            if answer is None:
                continue
            scores = [max(rouge_l(answer, r) for r in q.references) for q in questions]
            results[domain] = {"rougeL": float(np.mean(scores)), "n": len(questions), PER_QUESTION: scores}
    return summarize(results) if results else None


def _single_token_letters(tokenizer: PreTrainedTokenizerBase, count: int) -> list[int] | None:
    ids = [tokenizer(f" {letter}", add_special_tokens=False)["input_ids"] for letter in LETTERS[:count]]
    return [i[0] for i in ids] if all(len(i) == 1 for i in ids) else None


def _continuation(q: Question, index: int, scoring: str) -> str:
    return choice_text(q, index) if scoring == "text" or q.cloze else f" {LETTERS[index]}"


@torch.no_grad()
def _letter_scores(model, tokenizer, questions, letter_ids, max_length, batch_size, clock, task: Task) -> dict:
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
        task.advance(len(chunk))
    return {"acc": float(np.mean(correct)) if correct else 0.0, "n": len(questions), PER_QUESTION: correct}


@torch.no_grad()
def evaluate_multiple_choice(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, questions: list[Question],
                             max_length: int, batch_size: int, clock: ComputeClock | None = None,
                             scoring: str = "letter", shared_prompt: bool = True, task: Task | None = None) -> dict:
    """Accuracy (and acc_norm where continuations differ in length) with per-question results. shared_prompt:
    run each prompt once for all its choices where they share it (False: every choice as a full sequence,
    the reference the benchmark times it against). task: advanced by each batch's questions."""
    model.eval()
    device = next(model.parameters()).device
    clock = clock or ComputeClock()
    task = task or SILENT.task("", 0)
    cloze = any(q.cloze for q in questions)
    if scoring == "letter" and not cloze:
        letter_ids = _single_token_letters(tokenizer, max((len(q.choices) for q in questions), default=0))
        if letter_ids is not None:
            return _letter_scores(model, tokenizer, questions, letter_ids, max_length, batch_size, clock, task)
    rows = [[encode(tokenizer, q.uid, prompt_text(q), _continuation(q, i, scoring), max_length)
             for i in range(len(q.choices))] for q in questions]
    shared = shared_prompt and all(len({r.answer_start for r in choices}) == 1 for choices in rows)  # else a
    # prompt was cut per choice
    score = _choice_scores_shared_prompt if shared else _choice_scores
    flat = score(model, rows, max(1, batch_size), tokenizer.pad_token_id, device, clock, task)
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
    if scoring == "text" or cloze:  # letters are equal-length continuations: acc_norm would repeat acc
        result["acc_norm"] = correct_norm / n
    return result


def rouge_tokens(text: str) -> list[str]:
    """The words ROUGE-L compares: lower-cased alphanumeric runs (Google rouge-score's tokenisation)."""
    return re.findall(r"[a-z0-9]+", text.lower())


def rouge_l(candidate: str, reference: str) -> float:
    cand, ref = rouge_tokens(candidate), rouge_tokens(reference)
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


def generate_answers(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, questions: list[Question],
                     max_length: int, batch_size: int, max_new_tokens: int = 48,
                     clock: ComputeClock | None = None, system: str | None = None,
                     task: Task | None = None) -> list[str]:
    """Greedy answers: to the model's end-of-turn token (or EOS) for instruction prompts, also to the first
    newline for benchmark prompts (they end in "Answer:" and their answers take one line). system: the
    party's system prompt (prompts.render)."""
    return generate_with_ends(model, tokenizer, questions, max_length, batch_size, max_new_tokens, clock, system,
                              task)[0]


@torch.no_grad()
def generate_with_ends(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, questions: list[Question],
                       max_length: int, batch_size: int, max_new_tokens: int = 48, clock: ComputeClock | None = None,
                       system: str | None = None, task: Task | None = None) -> tuple[list[str], list[bool]]:
    """generate_answers, and for each answer whether it ended (a stop token) before max_new_tokens."""
    model.eval()
    device = next(model.parameters()).device
    clock = clock or ComputeClock()
    # Left padding, and left truncation: a long prompt keeps its end (the question and "Answer:"), as in training.
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    cut, tokenizer.truncation_side = tokenizer.truncation_side, "left"
    # Stop a row at end of text or of its turn, and (benchmark prompts) at its first newline token. An
    # instruction prompt without a chat template stops at EOS, the end its training targets.
    instruction = bool(questions) and questions[0].chat
    newline = [] if instruction else tokenizer("\n", add_special_tokens=False)["input_ids"][-1:]
    stops = sorted({tokenizer.eos_token_id, end_of_turn_id(tokenizer) if instruction else None, *newline} - {None})
    answers, ended = [], []
    try:
        for start in range(0, len(questions), batch_size):
            texts = [render(q, tokenizer, system) for q in questions[start:start + batch_size]]
            enc = tokenizer([t.prompt for t in texts], return_tensors="pt", padding=True, truncation=True,
                            max_length=max_length, add_special_tokens=texts[0].add_special_tokens).to(device)
            with clock.measure():
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=stops)
            generated = out[:, enc["input_ids"].shape[1]:]
            ended += torch.isin(generated, torch.tensor(stops, device=generated.device)).any(dim=1).tolist()
            for row in generated:
                answer = tokenizer.decode(row, skip_special_tokens=True).strip()
                answers.append(answer if instruction else answer.split("\n")[0])
            if task is not None:
                task.advance(len(texts))
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = side, cut
    return answers, ended


def evaluate_free_text(model, tokenizer, questions: list[Question], max_length: int, batch_size: int,
                       clock: ComputeClock | None = None, system: str | None = None, task: Task | None = None) -> dict:
    answers, ended = generate_with_ends(model, tokenizer, questions, max_length, batch_size, clock=clock,
                                        system=system, task=task)
    scores = [max(rouge_l(a, r) for r in q.references) for a, q in zip(answers, questions)]
    exact = [max(exact_match(a, r) for r in q.references) for a, q in zip(answers, questions)]
    return {"rougeL": float(np.mean(scores)) if scores else 0.0,
            "exact_match": float(np.mean(exact)) if exact else 0.0, "n": len(questions),
            "ended": float(np.mean(ended)) if ended else 0.0,  # share that stopped before max_new_tokens
            PER_QUESTION: [float(x) for x in scores], ANSWERS: answers}


def evaluate_questions(model, tokenizer, questions: list[Question], max_length: int, batch_size: int,
                       clock: ComputeClock | None = None, scoring: str = "letter", system: str | None = None,
                       task: Task | None = None) -> dict:
    """One evaluation set (one domain): multiple choice or free text; `task` counts the questions done."""
    if questions and questions[0].free_text:
        return evaluate_free_text(model, tokenizer, questions, max_length, batch_size, clock, system, task)
    return evaluate_multiple_choice(model, tokenizer, questions, max_length, batch_size, clock, scoring, task=task)


def _choice_scores(model, rows: list[list[Encoded]], batch_size: int, pad_id: int, device, clock,
                   task: Task) -> np.ndarray:
    """Summed log-probability of every choice's continuation, each choice a full sequence."""
    flat = [e for choices in rows for e in choices]
    per_batch = batch_size * max((len(c) for c in rows), default=1)  # whole questions together
    scores = []
    for _, batch in batches(flat, per_batch, pad_id):
        batch = batch.to(device)
        with clock.measure():
            logp = torch.log_softmax(tail_logits(model, batch).float(), dim=-1)
        token_logp = logp.gather(-1, batch.labels.unsqueeze(-1)).squeeze(-1) * batch.loss_mask
        scores.append(token_logp.sum(1).cpu().numpy())
        task.advance(max(1, round(len(batch.labels) * len(rows) / max(len(flat), 1))))  # in questions
    return np.concatenate(scores) if scores else np.zeros(0)


# The key/value cache argument and output field: `cache` from transformers 5.24 on, `past_key_values` before.
_CACHE = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def _choice_scores_shared_prompt(model, rows: list[list[Encoded]], batch_size: int, pad_id: int, device,
                                 clock, task: Task) -> np.ndarray:
    """The same sums, the prompt run once per question: its key/value cache is repeated for each choice and
    only the continuations go through the model again (a prompt is most of the tokens: about k times less
    compute for k choices). Prompt and continuation are tokenized apart (`encode`), so the tokens are the
    ones the full-sequence scorer sees."""
    # Prompts of like length batched together (less padding: about a quarter less time on review sentences),
    # four times the training batch (no gradients kept); scores go back to question order at the end.
    order = sorted(range(len(rows)), key=lambda i: rows[i][0].answer_start)
    batch_size *= 4
    scores = []
    for start in range(0, len(rows), batch_size):
        chunk = [rows[i] for i in order[start:start + batch_size]]
        prompts = [choices[0].input_ids[:choices[0].answer_start] for choices in chunk]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padded: every prompt ends in the last column
            ids[i, width - len(p):] = torch.from_numpy(p)
            mask[i, width - len(p):] = 1
        owner = torch.tensor([i for i, choices in enumerate(chunk) for _ in choices])
        answers = [e.answer_ids for choices in chunk for e in choices]
        span = max(len(a) for a in answers)
        cont = torch.full((len(answers), span), pad_id, dtype=torch.long)
        cont_mask = torch.zeros((len(answers), span), dtype=torch.long)
        for j, a in enumerate(answers):  # right padded after the prompt
            cont[j, :len(a)] = torch.from_numpy(a)
            cont_mask[j, :len(a)] = 1
        lengths = mask.sum(1)
        ids, mask, cont, cont_mask, owner, lengths = (t.to(device) for t in (ids, mask, cont, cont_mask, owner, lengths))
        with clock.measure():
            first = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                          use_cache=True, logits_to_keep=1)
            cache = getattr(first, _CACHE)
            cache.batch_select_indices(owner)
            out = model(input_ids=cont, attention_mask=torch.cat([mask[owner], cont_mask], 1),
                        position_ids=lengths[owner, None] + torch.arange(span, device=device),
                        **{_CACHE: cache}, use_cache=True, logits_to_keep=span)
            logits = torch.cat([first.logits[owner, -1:], out.logits[:, :-1]], 1).float()
            token_logp = torch.log_softmax(logits, -1).gather(-1, cont.unsqueeze(-1)).squeeze(-1) * cont_mask
        scores.append(token_logp.sum(1).cpu().numpy())
        task.advance(len(chunk))
    if not scores:
        return np.zeros(0)
    by_question = np.split(np.concatenate(scores), np.cumsum([len(rows[i]) for i in order])[:-1])
    placed = [None] * len(rows)
    for at, i in enumerate(order):
        placed[i] = by_question[at]
    return np.concatenate(placed)
