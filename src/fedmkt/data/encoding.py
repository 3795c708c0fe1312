"""Prompt + answer -> token ids, answer position and answer token boundaries; left-padded batches.

The prompt and the answer are tokenized separately, so every tokenizer has a token boundary where the
answer starts: the first distribution that carries loss sits at the same place in all of them.

Loss positions: position p predicts token p+1, so an example with n answer tokens has n loss
positions, the last prompt token and all answer tokens but the last. Batches are padded on the left:
every example's answer then ends at the last column, and a model only has to produce logits for
the last `tail` columns (`logits_to_keep`), not [batch, length, vocab].

Where each answer token ends is measured in bytes of the answer text, which places boundaries inside a
character too (byte-level BPE and byte fallback both split `中` into bytes). Two ways, exact first:
the tokens' canonical bytes (token_text.py) concatenate to the answer's bytes (a space the tokenizer
prepends aside); else the tokenizer's character offsets, in order, with only whitespace between them (a
WordPiece pre-tokenizer drops spaces; a normaliser may rewrite text), where a token's end is known only
if the next token does not overlap it. An encoding without any boundary makes the aligner fall back to
DTW.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from fedmkt.data.prompts import end_of_turn_id, render
from fedmkt.data.questions import Question
from fedmkt.data.token_text import canonical_tokens, token_bytes

UNKNOWN = -1


@dataclass(frozen=True)
class Encoded:
    uid: int
    input_ids: np.ndarray  # int64 [L]
    answer_start: int  # index of the first answer token
    answer_ends: np.ndarray | None = None  # int64 [L - answer_start]: byte where each answer token ends (-1:
    # unknown); None: no boundary known (an encoding made without offsets)

    @property
    def n_loss(self) -> int:
        return len(self.input_ids) - self.answer_start

    @property
    def boundaries_known(self) -> bool:
        return self.answer_ends is not None

    @property
    def loss_boundaries(self) -> np.ndarray:
        """int64 [n_loss]: byte of the answer at which each loss position's predicted token starts (the
        first at 0, the prompt/answer split; -1 unknown). Counted from the answer's first character that is not
        whitespace, not from the text: chat templates give each tokenizer its own prompt, while the answer is the
        same for all. Several positions may start at byte 0 (a token of the answer's leading space): the aligner
        matches the last of them, the one predicting the answer's first character."""
        if self.answer_ends is None:
            raise ValueError(f"example {self.uid}: token boundaries unknown for this tokenization")
        return np.r_[0, self.answer_ends[:-1]].astype(np.int64)

    @property
    def answer_ids(self) -> np.ndarray:
        return self.input_ids[self.answer_start:]


def _pieces(tokenizer: PreTrainedTokenizerBase, text: str, special: bool):
    enc = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    spans = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    is_special = np.isin(ids, np.asarray(tokenizer.all_special_ids, dtype=np.int64))
    return ids, spans, is_special


def answer_token_ends(tokenizer: PreTrainedTokenizerBase, answer: str, ids: np.ndarray, spans: np.ndarray,
                      is_special: np.ndarray) -> np.ndarray:
    """int64 [len(ids)]: the byte of `answer` where each of its tokens ends, UNKNOWN (-1) where neither the
    tokens' bytes nor their character offsets place it."""
    texts = canonical_tokens(tokenizer)
    target = answer.encode("utf-8", "surrogatepass")
    pieces = [token_bytes(texts[i]) if i < len(texts) else b"" for i in ids.tolist()]
    joined = b"".join(pieces)
    extra = len(joined) - len(target)
    # A tokenizer may prepend a space to a text (SentencePiece's "always" scheme): it stands for nothing here.
    if extra >= 0 and joined.endswith(target) and not joined[:extra].strip():
        return np.maximum(np.cumsum([len(p) for p in pieces], dtype=np.int64) - extra, 0)
    return _ends_from_offsets(answer, spans, is_special)


def _ends_from_offsets(answer: str, spans: np.ndarray, is_special: np.ndarray) -> np.ndarray:
    # A token's end is a boundary when the next token starts there, or after whitespace only (a WordPiece
    # pre-tokenizer drops spaces). Not when the next token overlaps it (both hold bytes of one character,
    # or a normaliser expanded one character into several tokens) or starts after text no token holds.
    # Tokens the tokenizer adds without text (BOS) end where the token before them did.
    covers = ~is_special | (spans[:, 1] > spans[:, 0])
    ends = np.maximum.accumulate(np.where(covers, spans[:, 1], 0))
    next_start = np.r_[np.where(covers, spans[:, 0], ends)[1:], len(answer)]
    next_start = np.minimum.accumulate(next_start[::-1])[::-1]  # the next text-holding token, not a BOS
    known = np.array([b >= a and not answer[a:b].strip() for a, b in zip(ends.tolist(), next_start.tolist())],
                     dtype=bool)
    byte_at = np.zeros(len(answer) + 1, dtype=np.int64)
    np.cumsum([len(c.encode("utf-8", "surrogatepass")) for c in answer], out=byte_at[1:])
    return np.where(known, byte_at[ends], UNKNOWN)


def encode(tokenizer: PreTrainedTokenizerBase, uid: int, prompt: str, answer: str, max_length: int,
           add_special_tokens: bool = True, end_id: int | None = None) -> Encoded:
    """end_id: a token the answer ends in (an instruction answer's end of turn). It stands for no text, so it
    ends where the answer does: the position predicting it starts at the answer's last byte in every
    tokenization, and aligns exactly across tokenizers like any other boundary."""
    p_ids, _, p_special = _pieces(tokenizer, prompt, special=add_special_tokens)
    a_ids, a_spans, a_special = _pieces(tokenizer, answer, special=False)
    if len(a_ids) == 0:
        raise ValueError(f"example {uid}: the answer {answer!r} has no tokens")
    a_ends = answer_token_ends(tokenizer, answer, a_ids, a_spans, a_special)
    # Bytes are counted from the answer's first character that is not whitespace: a benchmark prompt's answer
    # reads " 3000 g", a chat template's "3000 g", and the two must place "3" at the same byte.
    size = len(answer.encode("utf-8", "surrogatepass"))
    lead = size - len(answer.lstrip().encode("utf-8", "surrogatepass"))
    a_ends = np.where(a_ends >= 0, np.maximum(a_ends - lead, 0), UNKNOWN)
    if end_id is not None:
        a_ids = np.r_[a_ids, end_id]
        a_ends = np.r_[a_ends, size - lead]
    a_ids = a_ids[: max_length // 2]
    a_ends = a_ends[: max_length // 2]
    overflow = len(p_ids) + len(a_ids) - max_length
    if overflow > 0:
        # Drop the prompt's oldest text but keep its leading special tokens (BOS).
        lead = int(np.argmin(p_special)) if not p_special.all() else 0
        keep = np.r_[np.arange(lead), np.arange(lead + overflow, len(p_ids))]
        p_ids = p_ids[keep]
    return Encoded(uid=uid, input_ids=np.concatenate([p_ids, a_ids]), answer_start=len(p_ids), answer_ends=a_ends)


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


def encode_questions(tokenizer: PreTrainedTokenizerBase, questions: list[Question], max_length: int,
                     system: str | None = None) -> list[Encoded]:
    """Each question as prompt + its answer, tokenized for training or knowledge extraction; an instruction
    answer is followed by the model's end-of-turn token (prompts.end_of_turn_id), so that the model learns
    to stop. system: the party's system prompt (prompts.render)."""
    end = end_of_turn_id(tokenizer) if any(q.chat and q.free_text for q in questions) else None
    return [_encode_question(tokenizer, q, max_length, system, end) for q in questions]


def encode_question(tokenizer: PreTrainedTokenizerBase, q: Question, max_length: int,
                    system: str | None = None) -> Encoded:
    return encode_questions(tokenizer, [q], max_length, system)[0]


def _encode_question(tokenizer: PreTrainedTokenizerBase, q: Question, max_length: int, system: str | None,
                     end_id: int | None) -> Encoded:
    text = render(q, tokenizer, system)
    return encode(tokenizer, q.uid, text.prompt, text.answer, max_length, text.add_special_tokens,
                  end_id if q.chat and q.free_text else None)
