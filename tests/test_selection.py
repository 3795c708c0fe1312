"""The knowledge steps of a FedMKT absorb, on hand-made packets: no model, no transport."""

import numpy as np
import pytest

from fedmkt.alignment.transfer import softmax_rows
from fedmkt.alignment.vocab import VocabMap
from fedmkt.selection import (AlignedKnowledge, aligned_fractions, build_targets, gather_ce, select_sources,
                              selection_rates)
from tests.factories import packet


def identity_map(vocab: int = 50, shift: int = 0) -> VocabMap:
    return VocabMap(target_ids=(np.arange(vocab) + shift).astype(np.int32), distances=np.zeros(vocab, np.int32),
                    sender="s", receiver="r")


UIDS = [7, 8, 9]
LABELS = {7: np.array([101, 102]), 8: np.array([103, 104]), 9: np.array([105, 106])}


def test_dual_min_ce_keeps_the_best_peer_only_where_it_beats_self():
    own = np.array([1.0, 1.0, 1.0, 2.0])
    peers = np.array([[0.5, 2.0, 1.5, np.inf],
                      [0.7, 1.5, 0.9, 3.0]])
    w = select_sources(own, peers, "dual_min_ce")
    assert w.tolist() == [[0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 1, 0]]
    w = select_sources(own, peers, "always")
    assert w.tolist() == [[0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 1, 1]]
    w = select_sources(own, peers, "weighted")
    assert np.allclose(w.sum(0), 1) and w[1, 0] > w[2, 0] > w[0, 0] and w[1, 3] == 0
    with pytest.raises(ValueError, match="unknown selection rule"):
        select_sources(own, peers, "max")


def test_gather_ce_marks_examples_a_sender_did_not_send():
    # Prepare: the receiver has all three examples; "a" sent two of them in another order.
    own = packet("self", UIDS, [1.0, 2.0, 3.0])
    a = AlignedKnowledge(packet("a", [9, 7], [0.3, 0.7]), identity_map(), {})
    # Execute
    own_ce, peer_ce = gather_ce(UIDS, own, [a])
    # Assert
    assert own_ce.tolist() == [1.0, 2.0, 3.0]
    assert peer_ce[0, 0] == pytest.approx(0.7) and peer_ce[0, 2] == pytest.approx(0.3) and np.isinf(peer_ce[0, 1])


def test_build_targets_takes_own_or_reindexed_peer_knowledge_per_example():
    # Prepare: example 7 is learnt from the peer, 8 from itself, 9 half and half (a weighted rule).
    own = packet("self", UIDS, [1.0, 1.0, 1.0], seed=1)
    peer = packet("a", UIDS, [0.5, 2.0, 0.5], seed=2)
    alignment = {7: np.array([1, -1]), 8: np.array([0, 1]), 9: np.array([0, 1])}
    a = AlignedKnowledge(peer, identity_map(shift=100), alignment)
    weights = np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.5]], dtype=np.float32)
    # Execute
    targets = build_targets(UIDS, weights, own, [a], LABELS)
    # Assert: 7 from the peer, its row 1 (the example's 2nd) mapped by +100; no counterpart -> one-hot on the label.
    t7 = targets[7]
    assert t7.ids.shape == (2, 3)
    assert np.array_equal(t7.ids[0], peer.topk_ids[1] + 100)
    assert np.allclose(t7.probs[0], softmax_rows(peer.topk_logprobs[1:2])[0], atol=1e-6)
    assert t7.ids[1, 0] == 102 and t7.probs[1].tolist() == [1.0, 0.0, 0.0]
    # 8 from itself: its own top-K ids, unmapped.
    assert np.array_equal(targets[8].ids, own.topk_ids[2:4])
    assert np.allclose(targets[8].probs.sum(1), 1, atol=1e-6)
    # 9: both sources side by side, each carrying half the mass.
    assert targets[9].ids.shape == (2, 6) and np.allclose(targets[9].probs.sum(1), 1, atol=1e-6)
    assert np.allclose(targets[9].probs[:, :3].sum(1), 0.5, atol=1e-6)


def test_selection_rates_and_aligned_fractions_cover_every_example_sent():
    a = AlignedKnowledge(packet("a", [7, 8], [0.1, 0.1]), identity_map(),
                        {7: np.array([0, -1]), 8: np.array([-1, -1]), 9: np.array([0, 1])})
    b = AlignedKnowledge(packet("b", UIDS, [9.0, 9.0, 9.0]), identity_map(),
                        {u: np.array([0, 1]) for u in UIDS})
    weights = np.array([[0, 0, 1], [1, 1, 0], [0, 0, 0]], dtype=np.float32)
    assert selection_rates(weights, ["a", "b"]) == pytest.approx({"self": 1 / 3, "a": 2 / 3, "b": 0.0})
    # "a" sent 7 and 8 (4 positions, 1 aligned); example 9 has an alignment but was not sent.
    assert aligned_fractions(UIDS, [a, b]) == {"a": 0.25, "b": 1.0}
