import numpy as np
import pytest
import torch

from fedmkt.alignment.transfer import SoftTargets, own_targets, reindex
from fedmkt.alignment.vocab import VocabMap
from fedmkt.distill import dense_soft_ce, fedmkt_loss, sparse_soft_ce
from tests.factories import ragged_packet as packet


def test_sparse_soft_ce_equals_dense_reference_with_gradients():
    torch.manual_seed(0)
    logits = torch.randn(7, 50, requires_grad=True)
    ids = torch.randint(0, 50, (7, 5))
    ids[0, 1] = ids[0, 0]  # duplicate ids add up in both forms
    probs = torch.softmax(torch.randn(7, 5), -1)
    sparse = sparse_soft_ce(logits, ids, probs)
    dense = dense_soft_ce(logits, ids, probs)
    assert torch.allclose(sparse, dense, atol=1e-5)
    g_sparse, = torch.autograd.grad(sparse.sum(), logits)
    g_dense, = torch.autograd.grad(dense.sum(), logits)
    assert torch.allclose(g_sparse, g_dense, atol=1e-5)


@pytest.mark.parametrize("ce_weight", [0.9, 0.3, 0.0])
def test_fused_loss_equals_the_autograd_composition_with_gradients(ce_weight):
    torch.manual_seed(1)
    logits = torch.randn(6, 40, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 40, (6,))
    ids = torch.randint(0, 40, (6, 4))
    ids[1, 2] = ids[1, 0]  # duplicate ids add up
    ids[2, 0] = labels[2]  # a target id equal to the label
    probs = torch.softmax(torch.randn(6, 4, dtype=torch.float64), -1) * 0.9  # mass below 1, as after alignment
    fused = fedmkt_loss(logits, labels, ids, probs, ce_weight)
    composed = (ce_weight * torch.nn.functional.cross_entropy(logits, labels)
                + (1 - ce_weight) * sparse_soft_ce(logits, ids, probs).mean())
    assert torch.allclose(fused, composed, atol=1e-10)
    g_fused, = torch.autograd.grad(fused * 3.0, logits)
    g_composed, = torch.autograd.grad(composed * 3.0, logits)
    assert torch.allclose(g_fused, g_composed, atol=1e-10)
    assert torch.autograd.gradcheck(lambda z: fedmkt_loss(z, labels, ids, probs, ce_weight), (logits,))


def test_fused_loss_gradient_keeps_the_logits_dtype():
    logits = torch.randn(3, 20).to(torch.bfloat16).requires_grad_()
    loss = fedmkt_loss(logits, torch.tensor([1, 2, 3]), torch.tensor([[1, 4], [2, 5], [0, 3]]),
                       torch.tensor([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]), 0.9)
    loss.backward()
    assert loss.dtype == torch.float32 and logits.grad.dtype == torch.bfloat16 and torch.isfinite(logits.grad).all()


def test_one_hot_soft_target_is_plain_cross_entropy():
    logits = torch.randn(4, 30)
    labels = torch.tensor([1, 5, 7, 29])
    ids = torch.zeros(4, 3, dtype=torch.long)
    ids[:, 0] = labels
    probs = torch.zeros(4, 3)
    probs[:, 0] = 1
    assert torch.allclose(fedmkt_loss(logits, labels, ids, probs, 0.9),
                          torch.nn.functional.cross_entropy(logits, labels), atol=1e-6)
    assert torch.allclose(fedmkt_loss(logits, labels, ids, probs, 0.3),
                          torch.nn.functional.cross_entropy(logits, labels), atol=1e-6)


def test_reindex_maps_aligned_ids_and_one_hots_the_next_token():
    p = packet(n=2, k=4, vocab=100)
    vmap = VocabMap(target_ids=(np.arange(100) * 3 % 200).astype(np.int32), distances=np.zeros(100, np.int32),
                    sender="a", receiver="b")
    rows = p.rows(0)
    n_sender = rows.stop - rows.start
    alignment = np.array([0, -1, n_sender - 1])
    labels = np.array([11, 12, 13])
    t = reindex(p, 0, alignment, vmap, labels)
    assert np.array_equal(t.ids[0], p.topk_ids[rows][0] * 3 % 200)
    assert np.array_equal(t.ids[2], p.topk_ids[rows][-1] * 3 % 200)
    assert t.ids[1, 0] == 12 and t.probs[1, 0] == 1 and t.probs[1, 1:].sum() == 0  # next token, not current
    assert np.allclose(t.probs.sum(1), 1, atol=1e-5)
    expect = np.exp(p.topk_logprobs[rows][0].astype(np.float32))
    assert np.allclose(t.probs[0], expect / expect.sum(), atol=1e-3)
    own = own_targets(p, 1)
    assert own.ids.shape == (p.rows(1).stop - p.rows(1).start, 4)
    both = SoftTargets.concat([t.scaled(0.25), t.scaled(0.75)])
    assert both.ids.shape == (3, 8) and np.allclose(both.probs.sum(1), 1, atol=1e-5)


def test_a_padded_target_on_a_masked_logit_gives_no_nan():
    """Targets are padded with (id 0, p 0); a logit of -inf there (a masked token) must add nothing."""
    logits = torch.randn(2, 10)
    logits[:, 0] = float("-inf")
    logits.requires_grad_()
    ids = torch.tensor([[3, 0], [5, 0]])
    probs = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    loss = fedmkt_loss(logits, torch.tensor([3, 5]), ids, probs, 0.9)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert torch.isfinite(sparse_soft_ce(logits.detach(), ids, probs)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_loss_equals_one_chunk(monkeypatch, dtype):
    """Positions are widened to fp32 a few at a time (no full fp32 copy of bf16 logits on a GPU); the
    values and gradients are those of a single chunk."""
    import fedmkt.distill as distill

    torch.manual_seed(0)
    logits = torch.randn(37, 50, dtype=torch.float32).to(dtype)
    labels = torch.randint(0, 50, (37,))
    ids = torch.randint(0, 50, (37, 4))
    probs = torch.softmax(torch.randn(37, 4), -1)

    def run():
        z = logits.clone().requires_grad_(True)
        loss = fedmkt_loss(z, labels, ids, probs, 0.9)
        loss.backward()
        return loss.detach(), z.grad

    whole_loss, whole_grad = run()
    monkeypatch.setattr(distill, "CHUNK_ELEMENTS", 50 * 5)  # chunks of 5 positions, the last one short
    chunked_loss, chunked_grad = run()
    assert chunked_grad.dtype == dtype
    assert torch.equal(chunked_grad, whole_grad)
    assert torch.allclose(chunked_loss, whole_loss, rtol=1e-6, atol=1e-7)
