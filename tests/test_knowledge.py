import numpy as np
import pytest

from fedmkt.knowledge import KnowledgePacket, PacketError


def packet(n=3, k=4, vocab=100, seed=0):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 5, size=n)
    offsets = np.r_[0, np.cumsum(counts)]
    logits = rng.normal(size=(offsets[-1], k))
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True)) - 1.0
    return KnowledgePacket(sender="c1", tokenizer="abc", vocab_size=vocab, example_ids=np.arange(10, 10 + n),
                           ce=rng.uniform(0.5, 3, size=n).astype(np.float32), offsets=offsets,
                           topk_ids=rng.integers(0, vocab, size=(offsets[-1], k)).astype(np.int32),
                           topk_logprobs=logp.astype(np.float16))


def test_round_trip_is_exact():
    p = packet()
    q = KnowledgePacket.from_bytes(p.to_bytes())
    assert (q.sender, q.tokenizer, q.vocab_size, q.top_k) == ("c1", "abc", 100, 4)
    for name in ("example_ids", "ce", "offsets", "topk_ids", "topk_logprobs"):
        assert np.array_equal(getattr(p, name), getattr(q, name)), name
    assert q.rows(1) == slice(int(p.offsets[1]), int(p.offsets[2]))


@pytest.mark.parametrize("corrupt, message", [
    (lambda p: p.ce.__setitem__(0, np.nan), "NaN"),
    (lambda p: p.topk_logprobs.__setitem__((0, 0), np.nan), "NaN"),
    (lambda p: p.topk_logprobs.__setitem__((0, 0), 3.0), "<= 0"),
    (lambda p: p.topk_ids.__setitem__((0, 0), 100), "outside the sender vocabulary"),
    (lambda p: p.offsets.__setitem__(1, 99), "offsets"),
    (lambda p: p.example_ids.__setitem__(1, 10), "duplicate"),
])
def test_malformed_packets_are_rejected_by_name(corrupt, message):
    p = packet()
    corrupt(p)
    with pytest.raises(PacketError, match=message):
        KnowledgePacket.from_bytes(p.to_bytes())


def test_corrupted_bytes_are_rejected():
    data = bytearray(packet().to_bytes())
    with pytest.raises(PacketError, match="corrupted"):
        KnowledgePacket.from_bytes(bytes(data[:-7]))
    with pytest.raises(PacketError):
        KnowledgePacket.from_bytes(b"\x00" * 5)
    data[12:20] = b"XXXXXXXX"  # inside the header
    with pytest.raises(PacketError):
        KnowledgePacket.from_bytes(bytes(data))


def test_other_safetensors_and_versions_are_rejected():
    from safetensors.numpy import save

    with pytest.raises(PacketError, match="not a knowledge packet"):
        KnowledgePacket.from_bytes(save({"x": np.zeros(3)}))
    blob = packet().to_bytes().replace(b'"version":"1"', b'"version":"9"')
    with pytest.raises(PacketError, match="version 9"):
        KnowledgePacket.from_bytes(blob)


@pytest.mark.parametrize("vocab, ratio", [(49152, 2.5), (262144, 2.0)])
def test_binary_form_is_smaller_than_pickled_lists_of_the_same_positions(vocab, ratio):
    import pickle

    p = packet(n=50, k=16, vocab=vocab)
    nested = {"ce": p.ce.tolist(), "ids": [p.topk_ids[p.rows(i)].tolist() for i in range(50)],
              "logits": [p.topk_logprobs[p.rows(i)].astype(float).tolist() for i in range(50)]}
    assert len(pickle.dumps(nested)) > ratio * len(p.to_bytes())
