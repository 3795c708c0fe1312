"""Hand-made objects the tests share: knowledge packets, a server party and a transport without a model."""

import numpy as np

from fedmkt.federation.protocol import ClientFailure
from fedmkt.federation.roles import AbsorbStats, Progress
from fedmkt.knowledge import KnowledgePacket
from fedmkt.selection import AlignedKnowledge
from fedmkt.training import ComputeClock


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


def crash_after_a_share_in_round_two(federation, client: str = "stem") -> None:
    """Run `federation` until round 2, in which `client` serves its SHARE (trains, sends) and then the power
    goes: KeyboardInterrupt out of `federation.run()`."""
    import pytest

    from fedmkt.federation.protocol import Phase, Request

    original = federation.coordinator.run_round

    def crash_in_round_two(round_no):
        if round_no == 2:
            federation.coordinator.transport.call(Phase.SHARE, {client: Request(2).to_wire()})
            raise KeyboardInterrupt
        return original(round_no)

    federation.coordinator.run_round = crash_in_round_two
    with pytest.raises(KeyboardInterrupt):
        federation.run()


class FakeServer:
    """A server party without a model: records what it absorbs, answers with fixed knowledge."""

    def __init__(self):
        self.clock = ComputeClock()
        self.progress = Progress()
        self.public_hash = "fake-public-set"
        self.public_sha256 = "0" * 64
        self.absorbed: list[list[str]] = []
        self.supervised: list[int] = []

    public_uids = [1, 2]

    def sender_alignment(self, tokenizer):
        return None

    def select(self, senders):  # its own knowledge everywhere: the two-step exchange asks for no rows
        weights = np.zeros((1 + len(senders), len(self.public_uids)), dtype=np.float32)
        weights[0] = 1.0
        return weights

    def receive(self, peer, round_no=None, phase=None):
        return AlignedKnowledge(peer.packet, None, {})

    def absorb(self, peers):
        self.absorbed.append([p.packet.sender for p in peers])
        return AbsorbStats(loss=1.5, selected={"self": 0.5, **{p.packet.sender: 0.5 / len(peers) for p in peers}},
                           aligned_fraction={p.packet.sender: 0.9 for p in peers})

    def share_knowledge(self):
        return packet("server", [1, 2], [1.0, 1.0])

    def encode(self, questions):
        return list(questions)

    def train_supervised(self, examples, epochs):
        self.supervised.append(len(examples))
        return 0.25

    def evaluate(self, questions):
        return {"acc": 0.5, "acc_norm": 0.5, "n": len(questions)}

    def save_adapter(self, directory):
        directory.mkdir(parents=True, exist_ok=True)

    def adapter_state(self):
        return {}


class FakeTransport:
    """Answers each phase from a script: {phase: {client: wire reply or ClientFailure}}; logs every call."""

    def __init__(self, script):
        self.script, self.calls = script, []

    def call(self, phase, payloads):
        self.calls.append((phase, sorted(payloads)))
        replies = {name: self.script.get(phase, {}).get(name, ClientFailure("not scripted")) for name in payloads}
        return {name: {**r, "phase": phase.value} if isinstance(r, dict) else r for name, r in replies.items()}


def questions(*uids: int, domain: str = "stem") -> list:
    """Multiple-choice questions that only their ids tell apart (fake splits: the coordinator records each
    evaluation set's ids and the public set's commonest label)."""
    from fedmkt.data.questions import Question

    return [Question(uid=u, domain=domain, subject=domain, question=f"q{u}?", choices=("a", "b"), answer=u % 2)
            for u in uids]
