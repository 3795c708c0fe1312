"""Hand-made objects the tests share: knowledge packets without a model."""

import numpy as np

from fedmkt.knowledge import KnowledgePacket


def packet(sender: str, uids: list[int], ce: list[float], positions: int = 2, k: int = 3, vocab: int = 50, seed=0):
    """`positions` loss rows per example, log-probs that are a real distribution's top-K."""
    rng = np.random.default_rng(seed)
    rows = positions * len(uids)
    logits = rng.normal(size=(rows, k))
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True)) - 0.5
    return KnowledgePacket(sender=sender, tokenizer="t-" + sender, vocab_size=vocab,
                           example_ids=np.array(uids, dtype=np.int64), ce=np.array(ce, dtype=np.float32),
                           offsets=np.arange(len(uids) + 1, dtype=np.int64) * positions,
                           topk_ids=rng.integers(0, vocab, size=(rows, k)).astype(np.int32),
                           topk_logprobs=logp.astype(np.float16)).validate()


def ragged_packet(n=3, k=4, vocab=100, seed=0):
    """`n` examples of 1-4 loss rows each (ragged), log-probs summing below 1."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 5, size=n)
    offsets = np.r_[0, np.cumsum(counts)]
    logits = rng.normal(size=(offsets[-1], k))
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True)) - 1.0
    return KnowledgePacket(sender="c1", tokenizer="abc", vocab_size=vocab, example_ids=np.arange(10, 10 + n),
                           ce=rng.uniform(0.5, 3, size=n).astype(np.float32), offsets=offsets,
                           topk_ids=rng.integers(0, vocab, size=(offsets[-1], k)).astype(np.int32),
                           topk_logprobs=logp.astype(np.float16))
