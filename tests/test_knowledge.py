import json

import numpy as np
import pytest

from fedmkt.knowledge import VERSION, KnowledgePacket, PacketError
from tests.factories import ragged_packet as packet


@pytest.mark.parametrize("compress", [True, False])
def test_round_trip_with_16_bit_log_probs_is_exact(compress):
    p = packet()
    q = KnowledgePacket.from_bytes(p.to_bytes(logprob_bits=16, compress=compress))
    assert (q.sender, q.tokenizer, q.vocab_size, q.top_k) == ("c1", "abc", 100, 4)
    for name in ("example_ids", "ce", "offsets", "topk_ids", "topk_logprobs"):
        assert np.array_equal(getattr(p, name), getattr(q, name)), name
    assert q.rows(1) == slice(int(p.offsets[1]), int(p.offsets[2])) and q.logprob_error == 0


def test_8_bit_log_probs_are_within_half_a_step_of_the_sent_ones():
    p = packet(n=20, k=16)
    p.topk_logprobs = -np.sort(-p.topk_logprobs.astype(np.float32), axis=1).astype(np.float16)  # top-K order
    p.topk_logprobs[0] = p.topk_logprobs[0, 0] - np.arange(16, dtype=np.float16) * 3  # a row spanning 45 nats
    q = KnowledgePacket.from_bytes(p.to_bytes(logprob_bits=8))
    for name in ("example_ids", "ce", "offsets", "topk_ids"):
        assert np.array_equal(getattr(p, name), getattr(q, name)), name
    sent, got = p.topk_logprobs.astype(np.float32), q.topk_logprobs
    top = sent.max(axis=1, keepdims=True)
    near = top - sent < 255 / 16  # within the 8-bit range below each row's top
    assert np.abs(got - sent)[near].max() <= 1 / 32 + 1e-3 and q.logprob_error == 1 / 32
    assert np.all(got[~near] >= sent[~near]) and np.allclose(got[~near], top.repeat(16, 1)[~near] - 255 / 16, atol=1e-2)


def test_the_cross_entropy_bound_allows_for_8_bit_rounding():
    """One position whose label is second in top-K, 0.0313 nat below the top: 8 bits round it down to a
    whole step (1/16), which would raise the claimed CE's lower bound above the exact CE."""
    from fedmkt.knowledge import Expected

    logp = np.array([[-0.75, -0.782, -3.0, -5.0]], dtype=np.float16)  # a top-K of one distribution (sum 0.97)
    ce = np.array([-float(logp[0, 1])], dtype=np.float32)  # exactly the label's NLL
    p = KnowledgePacket(sender="c1", tokenizer="abc", vocab_size=100, example_ids=np.array([7]), ce=ce,
                        offsets=np.array([0, 1]), topk_ids=np.array([[4, 9, 1, 2]], dtype=np.int32), topk_logprobs=logp)
    expected = Expected(labels={7: np.array([9])}, top_k=4, ce_tolerance=0.0)
    q = KnowledgePacket.from_bytes(p.to_bytes(logprob_bits=8))
    assert q.topk_logprobs[0, 1] < logp[0, 1] - 0.02  # rounded down by nearly half a step
    q.check(expected)
    q.logprob_error = 0.0
    with pytest.raises(PacketError, match="claims cross-entropy"):  # what the allowance prevents
        q.check(expected)


@pytest.mark.parametrize("corrupt, message", [
    (lambda p: p.ce.__setitem__(0, np.nan), "NaN"),
    (lambda p: p.topk_logprobs.__setitem__((0, 0), np.nan), "NaN"),
    (lambda p: p.topk_logprobs.__setitem__((0, 0), 3.0), "<= 0"),
    (lambda p: p.topk_ids.__setitem__((0, 0), 100), "outside the sender vocabulary"),
    (lambda p: p.offsets.__setitem__(1, 99), "offsets"),
    (lambda p: p.example_ids.__setitem__(1, 10), "duplicate"),
])
@pytest.mark.parametrize("bits", [8, 16])
def test_malformed_packets_are_rejected_by_name(corrupt, message, bits):
    p = packet()
    corrupt(p)
    with pytest.raises(PacketError, match=message):
        KnowledgePacket.from_bytes(p.to_bytes(logprob_bits=bits))


def test_corrupted_or_oversized_compressed_packets_are_rejected():
    import lzma

    data = bytearray(packet().to_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the xz stream: its CRC or its decoder objects
    with pytest.raises(PacketError, match="corrupted"):
        KnowledgePacket.from_bytes(bytes(data))
    with pytest.raises(PacketError, match="corrupted"):
        KnowledgePacket.from_bytes(bytes(packet().to_bytes()[:-10]))
    zeros = lzma.compress(b"\x00" * (64 << 20), format=lzma.FORMAT_XZ)  # ~10 kB that expand to 64 MiB
    with pytest.raises(PacketError, match="corrupted"):
        KnowledgePacket.from_bytes(zeros)


def _declaring(size: int) -> bytes:
    """A safetensors header that declares one array of `size` bytes."""
    header = json.dumps({"topk_steps": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}).encode()
    return len(header).to_bytes(8, "little") + header


def test_decoding_is_bounded_by_the_header_before_the_arrays_are_inflated():
    import lzma

    bomb = lzma.compress(_declaring(1 << 34) + b"\x00" * (1 << 20), format=lzma.FORMAT_XZ)
    with pytest.raises(PacketError, match="declares 17179869"):  # refused from its header: 16 GiB never inflate
        KnowledgePacket.from_bytes(bomb)
    data = packet().to_bytes(compress=False)
    with pytest.raises(PacketError, match=f"declares {len(data)} decoded bytes, over the limit of {len(data) - 1}"):
        KnowledgePacket.from_bytes(lzma.compress(data), max_decoded=len(data) - 1)
    assert KnowledgePacket.from_bytes(lzma.compress(data), max_decoded=len(data)).sender == "c1"
    longer = lzma.compress(data + b"\x00" * 4096, format=lzma.FORMAT_XZ)  # more inside than the header says
    with pytest.raises(PacketError, match="holds more than its header declares"):
        KnowledgePacket.from_bytes(longer)
    with pytest.raises(PacketError, match="its header declares"):
        KnowledgePacket.from_bytes(data + b"\x00")


def test_decoding_holds_a_small_multiple_of_the_decoded_size():
    import tracemalloc

    from fedmkt.knowledge import DECODE_PEAK_FACTOR, XZ_DECODER_BYTES

    big = packet(n=8000, k=32, vocab=262144)
    for bits in (8, 16):
        data = big.to_bytes(logprob_bits=bits)
        decoded = len(big.to_bytes(logprob_bits=bits, compress=False))
        tracemalloc.start()
        KnowledgePacket.from_bytes(data)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        # Measured: about 5x (8 bits) and 4x (16 bits) the decoded size, beside the xz decoder's ~9 MiB.
        assert peak < DECODE_PEAK_FACTOR * decoded + XZ_DECODER_BYTES, (bits, peak, decoded)


def test_corrupted_bytes_are_rejected():
    data = bytearray(packet().to_bytes(compress=False))
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
    blob = packet().to_bytes(compress=False).replace(f'"version":"{VERSION}"'.encode(), b'"version":"9"')
    with pytest.raises(PacketError, match="version 9"):
        KnowledgePacket.from_bytes(blob)


@pytest.mark.parametrize("vocab, ratio", [(49152, 2.5), (262144, 2.0)])
def test_binary_form_is_smaller_than_pickled_lists_of_the_same_positions(vocab, ratio):
    import pickle

    p = packet(n=50, k=16, vocab=vocab)
    nested = {"ce": p.ce.tolist(), "ids": [p.topk_ids[p.rows(i)].tolist() for i in range(50)],
              "logits": [p.topk_logprobs[p.rows(i)].astype(float).tolist() for i in range(50)]}
    assert len(pickle.dumps(nested)) > ratio * len(p.to_bytes())
