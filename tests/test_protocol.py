"""Requests and replies in their wire form: every field round-trips, a malformed reply is refused by name."""

import pytest

from fedmkt.federation.protocol import (REPLIES, AdapterReply, ClientFailure, DistillReply, EvaluateReply, Phase,
                                        PrivateReply, Reply, Request, ShareReply)

EXAMPLES = [ShareReply(1.5, packet=b"\x00\x01", private_loss=0.25),
            ShareReply(1.5, packet=b"\x00\x01", epsilon=2.5, delta=1e-3, budget_stop=True), PrivateReply(0.5, 2.0),
            DistillReply(2.0, 0.3, {"self": 0.25, "server": 0.75}, {"server": 0.9}),
            EvaluateReply(0.1, {"stem": {"acc": 0.5, "acc_norm": 0.25, "n": 4, "per_question": [1.0, 0.0, 1.0, 0.0]},
                                "natural_instructions/subtask041": {"rougeL": 0.3, "n": 2,
                                                                    "per_question": [0.4, 0.2],
                                                                    "answers": ["Paris", "two\nlines"]}}),
            AdapterReply(0.2, b"weights"), Reply(0.0)]


@pytest.mark.parametrize("reply", EXAMPLES, ids=lambda r: type(r).__name__)
def test_every_reply_round_trips_through_its_wire_form(reply):
    wire = reply.to_wire()
    # What a ConfigRecord carries: scalars, bytes, lists of floats or of strings.
    assert all(isinstance(v, (str, int, float, bytes)) or (isinstance(v, list) and (
        all(isinstance(x, float) for x in v) or all(isinstance(x, str) for x in v))) for v in wire.values())
    assert type(reply).from_wire(wire) == reply
    if isinstance(reply, EvaluateReply):  # a count comes back a count, as in the server's own results
        assert all(type(r["n"]) is int for r in type(reply).from_wire(wire).scores.values())


def test_each_phase_has_a_reply_type_a_client_handler_and_a_flower_message_type():
    from fedmkt.federation.client import HANDLERS

    from fedmkt.federation.flower_client import FLOWER_HANDLERS, client_app

    assert set(REPLIES) == set(Phase) == set(HANDLERS) == set(FLOWER_HANDLERS)
    for phase in Phase:
        category, _, action = phase.value.partition(".")
        assert category in ("train", "evaluate", "query")  # Flower's message categories
        # Registered under the phase's own message type (Flower names a bare category "<category>.default").
        assert f"{category}.{action or 'default'}" in client_app._registered_funcs


NO_DP = {"epsilon": float("nan"), "delta": float("nan"), "budget_stop": 0}  # a client without DP-SGD


@pytest.mark.parametrize("kind, wire, problem", [
    (ShareReply, {"compute_s": 1.0, "private_loss": 1.0, **NO_DP}, "no 'packet'"),
    (ShareReply, {"compute_s": 1.0, "packet": "text", "private_loss": 1.0, **NO_DP}, "'packet' is str"),
    (PrivateReply, {"compute_s": 1.0, "private_loss": 1.0}, "no 'epsilon'"),
    (PrivateReply, {"compute_s": 1.0, "private_loss": 1.0, **NO_DP, "delta": 2.0}, "'delta' = 2.0 is outside"),
    (PrivateReply, {"compute_s": 1.0, "private_loss": 1.0, **NO_DP, "budget_stop": 2}, "'budget_stop' is 2"),
    (PrivateReply, {"compute_s": 1.0, "private_loss": "0.5"}, "'private_loss' is str"),
    (DistillReply, {"compute_s": 1.0, "loss": 1.0, "selected.self": b"x"}, "'selected.self' is bytes"),
    (DistillReply, {"compute_s": 1.0, "selected.self": 1.0}, "no 'loss'"),
    (PrivateReply, {"private_loss": 1.0, "compute_s": "fast"}, "'compute_s' is str"),
    (PrivateReply, {"private_loss": 1.0}, "no 'compute_s'"),
    (EvaluateReply, {"compute_s": 1.0, "eval.stem": 0.5}, "names no metric"),
    (EvaluateReply, {"compute_s": 1.0, "eval.stem.n": 3.0, "eval.stem.per_question": [1.0, 0.0]}, "scores 2 questions but says n=3"),
    (EvaluateReply, {"compute_s": 1.0, "eval.stem.n": 2.0, "eval.stem.per_question": [1.0, 7.0]}, "scores in \\[0, 1\\]"),
    (EvaluateReply, {"compute_s": 1.0, "eval.stem.n": 1.0, "eval.stem.per_question": 1.0}, "'eval.stem.per_question' is float"),
    (EvaluateReply, {"compute_s": 1.0, "eval.stem.n": 2.5, "eval.stem.acc": 1.0}, "not a count of questions"),
    (EvaluateReply, {"compute_s": 1.0, "eval.qa.n": 2.0, "eval.qa.answers": ["a"]}, "eval.qa answers 1 questions but says n=2"),
    (EvaluateReply, {"compute_s": 1.0, "eval.qa.n": 1.0, "eval.qa.answers": [3.0]}, "other than answers of at most"),
    (EvaluateReply, {"compute_s": 1.0, "eval.qa.n": 1.0, "eval.qa.answers": ["x" * 9000]}, "other than answers of at most 8192"),
    (PrivateReply, "not a record", "not a record"),
])
def test_malformed_replies_are_refused_with_the_field_named(kind, wire, problem):
    with pytest.raises(ClientFailure, match=problem):
        kind.from_wire(wire)


def test_a_request_carries_only_what_its_phase_needs():
    assert Request(3).to_wire() == {"round": 3}
    request = Request(2, packet=b"p", tokenizer="gemma3-270m")
    assert Request.from_wire(request.to_wire()) == request


@pytest.mark.parametrize("kind, wire, problem", [
    (PrivateReply, {"compute_s": float("inf"), "private_loss": 1.0}, "'compute_s' = inf is outside"),
    (PrivateReply, {"compute_s": -1e6, "private_loss": 1.0}, "'compute_s' = -1000000.0 is outside"),
    (PrivateReply, {"compute_s": 1.0, "private_loss": -2.0}, "'private_loss' = -2.0 is outside"),
    (DistillReply, {"compute_s": 1.0, "loss": -5.0}, "'loss' = -5.0 is outside"),
    (DistillReply, {"compute_s": 1.0, "loss": float("nan")}, "'loss' is NaN"),
    (DistillReply, {"compute_s": 1.0, "loss": 1.0, "selected.self": 1e9}, "'selected.self' = 1000000000.0 is outside"),
    (DistillReply, {"compute_s": 1.0, "loss": 1.0, "aligned.server": -0.1}, "'aligned.server' = -0.1 is outside"),
    (DistillReply, {"compute_s": 1.0, "loss": 1.0, "selected.a\nb": 0.5}, "does not end in a party"),
    (EvaluateReply, {"compute_s": 1.0, "eval.stem.n": 2.0, "eval.stem.acc": 7.5}, "'eval.stem.acc' = 7.5 is outside"),
    (EvaluateReply, {"compute_s": 1.0, "eval.stem.n": 2.0, "eval.stem.acc": 0.5, "eval.stem.bogus": 0.5},
     "no metric of that name"),
    (EvaluateReply, {"compute_s": 1.0, "eval.stem.n": 2.0}, "lacks its count n or a primary metric"),
])
def test_numbers_out_of_range_are_refused_where_they_enter(kind, wire, problem):
    with pytest.raises(ClientFailure, match=problem):
        kind.from_wire(wire)


def test_an_unmeasured_private_loss_crosses_as_nan():
    import math

    assert math.isnan(PrivateReply.from_wire(PrivateReply(0.5).to_wire()).private_loss)


def test_a_reply_names_its_phase_and_one_for_another_phase_is_refused():
    from fedmkt.federation.protocol import reply_from_wire, reply_to_wire

    wire = reply_to_wire(Phase.PRIVATE, PrivateReply(0.5, 1.0))
    assert reply_from_wire(Phase.PRIVATE, wire) == PrivateReply(0.5, 1.0)
    with pytest.raises(ClientFailure, match="it answers 'train.private', not train.distill"):
        reply_from_wire(Phase.DISTILL, {**wire, "loss": 1.0})


def test_every_reply_field_declares_how_it_crosses():
    from dataclasses import fields

    from fedmkt.federation.protocol import WIRE

    for kind in {*REPLIES.values()}:
        assert all(WIRE in f.metadata for f in fields(kind)), kind
