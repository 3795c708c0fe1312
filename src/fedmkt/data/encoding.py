"""Prompt + answer -> token ids, answer position and character offsets; left-padded batches.

The prompt and the answer are tokenized separately, so every tokenizer has a token boundary where the
answer starts: the first distribution that carries loss sits at the same character in all of them.

Loss positions: position p predicts token p+1, so an example with n answer tokens has n loss
positions, the last prompt token and all answer tokens but the last. Batches are padded on the left:
every example's answer then ends at the last column, and a model only has to produce logits for
the last `tail` columns (`logits_to_keep`), not [batch, length, vocab].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from fedmkt.data.prompts import render
from fedmkt.data.questions import Question


@dataclass(frozen=True)
class Encoded:
    uid: int
    input_ids: np.ndarray  # int64 [L]
    answer_start: int  # index of the first answer token
    ends: np.ndarray  # int64 [L]: character where each token's text ends in prompt+answer; -1 special
    offsets_valid: bool  # the non-special tokens' spans tile the text
    prompt_chars: int = 0  # length of the prompt text: answer characters are counted from here

    @property
    def n_loss(self) -> int:
        return len(self.input_ids) - self.answer_start

    @property
    def loss_boundaries(self) -> np.ndarray:
        """Character offset, counted from the start of the answer, at which each loss position's next-token
        prediction starts (-1: a special token). From the answer, not the text: chat templates give each
        tokenizer its own prompt, while the answer text is the same for all."""
        ends = self.ends[self.answer_start - 1: len(self.input_ids) - 1]
        return np.where(ends < 0, -1, ends - self.prompt_chars)

    @property
    def answer_ids(self) -> np.ndarray:
        return self.input_ids[self.answer_start:]


def _pieces(tokenizer: PreTrainedTokenizerBase, text: str, special: bool):
    enc = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    spans = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    is_special = np.isin(ids, np.asarray(tokenizer.all_special_ids, dtype=np.int64))
    return ids, spans, is_special


def _tiles(spans: np.ndarray, is_special: np.ndarray, start: int, end: int) -> bool:
    # Special tokens written in the text (a chat template's "<|im_start|>") cover their characters; those the
    # tokenizer adds (BOS) cover none and are left out.
    spans = spans[~is_special | (spans[:, 1] > spans[:, 0])]
    if len(spans) == 0:
        return start == end
    return bool(spans[0, 0] == start and spans[-1, 1] == end and np.all(spans[1:, 0] == spans[:-1, 1]))


def encode(tokenizer: PreTrainedTokenizerBase, uid: int, prompt: str, answer: str, max_length: int,
           add_special_tokens: bool = True) -> Encoded:
    p_ids, p_spans, p_special = _pieces(tokenizer, prompt, special=add_special_tokens)
    a_ids, a_spans, a_special = _pieces(tokenizer, answer, special=False)
    if len(a_ids) == 0:
        raise ValueError(f"example {uid}: the answer {answer!r} has no tokens")
    valid = _tiles(p_spans, p_special, 0, len(prompt)) and _tiles(a_spans, a_special, 0, len(answer))
    a_ids, a_spans, a_special = a_ids[: max_length // 2], a_spans[: max_length // 2], a_special[: max_length // 2]
    overflow = len(p_ids) + len(a_ids) - max_length
    if overflow > 0:
        # Drop the prompt's oldest text but keep its leading special tokens (BOS).
        lead = int(np.argmin(p_special)) if not p_special.all() else 0
        keep = np.r_[np.arange(lead), np.arange(lead + overflow, len(p_ids))]
        p_ids, p_spans, p_special = p_ids[keep], p_spans[keep], p_special[keep]
    ends = np.concatenate([np.where(p_special, -1, p_spans[:, 1]), np.where(a_special, -1, a_spans[:, 1] + len(prompt))])
    return Encoded(uid=uid, input_ids=np.concatenate([p_ids, a_ids]), answer_start=len(p_ids), ends=ends,
                   offsets_valid=valid, prompt_chars=len(prompt))


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, T] left padded
    attention_mask: torch.Tensor  # [B, T]
    position_ids: torch.Tensor  # [B, T]
    tail: int  # loss columns: the `tail` columns before the last one
    loss_mask: torch.Tensor  # bool [B, tail]
    labels: torch.Tensor  # int64 [B, tail] (next tokens; 0 where masked)

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.position_ids.to(device),
                     self.tail, self.loss_mask.to(device), self.labels.to(device))


def collate(examples: list[Encoded], pad_id: int) -> Batch:
    width = max(len(e.input_ids) for e in examples)
    tail = max(e.n_loss for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    loss_mask = torch.zeros((len(examples), tail), dtype=torch.bool)
    labels = torch.zeros((len(examples), tail), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, width - n:] = torch.from_numpy(e.input_ids)
        mask[row, width - n:] = 1
        loss_mask[row, tail - e.n_loss:] = True
        labels[row, tail - e.n_loss:] = torch.from_numpy(e.answer_ids)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return Batch(ids, mask, positions, tail, loss_mask, labels)


def batches(examples: list[Encoded], batch_size: int, pad_id: int):
    """Consecutive batches in the given order (the caller shuffles)."""
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        yield chunk, collate(chunk, pad_id)


def encode_questions(tokenizer: PreTrainedTokenizerBase, questions: list[Question], max_length: int) -> list[Encoded]:
    """Each question as prompt + its answer, tokenized for training or knowledge extraction."""
    return [encode_question(tokenizer, q, max_length) for q in questions]


def encode_question(tokenizer: PreTrainedTokenizerBase, q: Question, max_length: int) -> Encoded:
    text = render(q, tokenizer)
    return encode(tokenizer, q.uid, text.prompt, text.answer, max_length, text.add_special_tokens)
