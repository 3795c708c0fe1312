"""Fuzzing what a client sends (bounded and seeded, so CI runs the same cases every time): real packets and
replies of a tiny federation, mutated field by field (dtype, shape, extreme and non-finite values, bit
flips, truncation, renamed keys), driven through the server's receive path and through fake-transport
rounds. Whatever comes in, the outcome is a use of it with every number in range, or a refusal with a
bounded reason; decoding stays under its memory bound; the run completes and its report renders."""

from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load, save

from fedmkt.config import parse_config
from fedmkt.federation.coordinator import Coordinator
from fedmkt.federation.local import LocalFederation
from fedmkt.federation.protocol import ClientFailure, Phase, Request, reply_from_wire
from fedmkt.federation.roles import ReceivedPacket
from fedmkt.federation.store import RunStore
from fedmkt.knowledge import DECODE_PEAK_FACTOR, XZ_DECODER_BYTES, KnowledgePacket, PacketError
from fedmkt.records import MAX_TEXT_CHARS
from fedmkt.selection import SenderFailure, build_targets, select_sources
from tests.tiny import tiny_config

CASES = 300
FUZZ = settings(max_examples=CASES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def federation(tmp_path_factory, mmlu):
    """A tiny federation and, for each phase, a real wire reply of client hum (round 1): whole packets (one-step
    exchange), every row of which goes through the same receive path as the rows of the two-step exchange."""
    fed = LocalFederation(parse_config(tiny_config(tmp_path_factory.mktemp("fuzz"), "fuzz", rounds=1,
                                                   exchange="one_step")), questions=mmlu)
    fed.prepare()
    hum, public = fed.runtimes["hum"], fed.server.public_hash
    replies = {Phase.SHARE: hum.handle(Phase.SHARE, Request(1, public_set=public).to_wire())}
    down = fed.server.share_knowledge().to_bytes(round_no=1, phase=Phase.DISTILL.value)
    replies[Phase.DISTILL] = hum.handle(Phase.DISTILL, Request(1, packet=down, tokenizer=fed.config.server.source,
                                                                 public_set=public).to_wire())
    replies[Phase.EVALUATE] = hum.handle(Phase.EVALUATE, Request(1, public_set=public).to_wire())
    fed.store.close()
    return fed, replies


# -- packets -----------------------------------------------------------------------------------------------
EXTREMES = [np.nan, np.inf, -np.inf, -1.0, 0.0, 1e30, -1e30, 2**31, 2**32, -2**31, 65535]
DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.int64, np.float16, np.float32, np.float64]


def _parts(data: bytes) -> tuple[dict, dict]:
    import lzma

    raw = lzma.decompress(data)
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    return load(raw), dict(header["__metadata__"])


def _mutated(data: bytes, draw) -> bytes:
    """One mutation of a real packet's bytes: at the byte level, or of one array or metadata field."""
    import lzma

    kind = draw(st.sampled_from(["flip", "truncate", "dtype", "shape", "value", "rename", "meta", "compressed"]))
    if kind == "flip":
        out = bytearray(data)
        at = draw(st.integers(0, len(out) - 1))
        out[at] ^= 1 << draw(st.integers(0, 7))
        return bytes(out)
    if kind == "truncate":
        return data[:draw(st.integers(0, len(data) - 1))]
    arrays, meta = _parts(data)
    name = draw(st.sampled_from(sorted(arrays)))
    array = arrays[name]
    if kind == "dtype":
        arrays[name] = array.astype(draw(st.sampled_from(DTYPES)))
    elif kind == "shape":
        how = draw(st.sampled_from(["drop_row", "add_row", "drop_column", "flatten", "scalar"]))
        if how == "drop_row" and array.shape[0]:
            array = array[:-1]
        elif how == "add_row":
            array = np.concatenate([array, array[:1]]) if array.shape[0] else array
        elif how == "drop_column" and array.ndim == 2:
            array = array[:, :-1]
        elif how == "flatten":
            array = array.reshape(-1)
        elif how == "scalar" and array.size:
            array = array.reshape(-1)[:1].reshape(())
        arrays[name] = np.ascontiguousarray(array)
    elif kind == "value" and array.size:
        value = draw(st.sampled_from(EXTREMES))
        as_float = array.dtype.kind == "f" or not np.isfinite(value) or abs(value) > 2**62  # an int64 cannot hold it
        flat = array.astype(np.float64 if as_float else np.int64).reshape(-1)
        flat[draw(st.integers(0, flat.size - 1))] = value
        arrays[name] = np.ascontiguousarray(flat.reshape(array.shape))
    elif kind == "rename":
        arrays[name + "_"] = arrays.pop(name)
    elif kind == "meta":
        key = draw(st.sampled_from(sorted(meta)))
        meta[key] = draw(st.sampled_from(["", "-1", "0", str(2**40), "x" * 5000, "nan", "2", "\n# heading"]))
    blob = save(arrays, metadata=meta)
    return lzma.compress(blob, format=lzma.FORMAT_XZ) if kind != "compressed" else blob


def _receive(server, tokenizer, data: bytes):
    """The server's receive path for client hum's packet in round 1, up to the soft targets it would train on."""
    packet = KnowledgePacket.from_bytes(data, max_bytes=1 << 24, max_decoded=1 << 26)
    if packet.sender != "hum":
        raise PacketError("claims another sender")
    knowledge = server.receive(ReceivedPacket(packet, tokenizer), 1, Phase.SHARE.value)
    own = server.share_knowledge()
    uids = [e.uid for e in server.public]
    weights = select_sources(own.ce[[own.index()[u] for u in uids]].astype(np.float64),
                             np.array([[packet.ce[packet.index()[u]] for u in uids]]), "always")
    return build_targets(uids, weights, own, [knowledge], {e.uid: e.answer_ids for e in server.public})


@FUZZ
@given(st.data())
def test_a_mutated_packet_is_used_in_range_or_refused_with_a_bounded_reason(federation, data):
    fed, replies = federation
    from fedmkt.models import peer_tokenizer

    tokenizer = peer_tokenizer(fed.config.clients[1].model.source)
    mutated = _mutated(replies[Phase.SHARE]["packet"], data.draw)
    tracemalloc.start()
    try:
        targets = _receive(fed.server, tokenizer, mutated)
    except (PacketError, SenderFailure) as refused:
        assert len(str(refused)) < 2000, str(refused)[:300]
        targets = None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < DECODE_PEAK_FACTOR * (1 << 20) + XZ_DECODER_BYTES + 50 * len(mutated), peak
    if targets is not None:  # what the server would train on: distributions over its own vocabulary
        for target in targets.values():
            assert np.all(np.isfinite(target.probs)) and np.all(target.probs >= 0)
            assert np.allclose(target.probs.sum(axis=1), 1.0, atol=1e-3)
            assert target.ids.min() >= 0 and target.ids.max() < len(fed.server.tokenizer)


# -- replies -----------------------------------------------------------------------------------------------
ODD = [float("nan"), float("inf"), -float("inf"), -1e6, -5.0, 1e9, 7.5, 2.5, "text", b"bytes", [], [1.0, 2.0],
       ["x" * 9000], None, True, 2**63, "y" * 600_000]


def _mutated_reply(wire: dict, draw) -> dict:
    out = dict(wire)
    key = draw(st.sampled_from(sorted(out) + ["selected.x\n# heading", "eval.extra.acc", "eval.stem.bogus"]))
    how = draw(st.sampled_from(["delete", "rename", "set"]))
    if how == "delete":
        out.pop(key, None)
    elif how == "rename" and key in out:
        out[key + "x"] = out.pop(key)
    else:
        out[key] = draw(st.sampled_from(ODD))
    return out


def _numbers_in_range(reply) -> None:
    assert math.isfinite(reply.compute_s) and reply.compute_s >= 0
    for name in ("private_loss", "loss"):
        value = getattr(reply, name, 0.0)
        assert math.isnan(value) or (math.isfinite(value) and value >= 0)
    for name in ("selected", "aligned"):
        assert all(0.0 <= v <= 1.0 for v in getattr(reply, name, {}).values())
    for result in getattr(reply, "scores", {}).values():
        for metric, value in result.items():
            values = value if isinstance(value, list) else [value]
            if metric not in ("answers", "n"):
                assert all(0.0 <= v <= 1.0 for v in values), (metric, value)


@FUZZ
@given(st.data())
def test_a_mutated_reply_is_parsed_in_range_or_refused(federation, data):
    _, replies = federation
    phase = data.draw(st.sampled_from([Phase.SHARE, Phase.DISTILL, Phase.EVALUATE]))
    wire = _mutated_reply(replies[phase], data.draw)
    try:
        reply = reply_from_wire(phase, wire)
    except ClientFailure as refused:
        assert len(str(refused)) < 1000
        return
    _numbers_in_range(reply)


# -- whole rounds over a fake transport --------------------------------------------------------------------
def _finite_json(path) -> dict:
    return json.loads(path.read_text(), parse_constant=pytest.fail)  # NaN, inf: not strict JSON


@settings(max_examples=12, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.data())
def test_a_round_with_one_mutated_client_completes_and_its_report_renders(federation, tmp_path_factory, data):
    from fedmkt.report import write_run_report

    fed, replies = federation
    phase = data.draw(st.sampled_from([Phase.SHARE, Phase.DISTILL, Phase.EVALUATE]))
    mutation = data.draw(st.sampled_from(["reply", "packet"])) if phase == Phase.SHARE else "reply"
    if mutation == "packet":
        bad = dict(replies[phase], packet=_mutated(replies[phase]["packet"], data.draw))
    else:
        bad = _mutated_reply(replies[phase], data.draw)

    class OneMutated:
        """stem answers for itself (its real runtime); hum as it did once, but with the mutation in `phase`."""

        def call(self, called, payloads):
            out = {}
            for name, payload in payloads.items():
                if name == "stem":
                    out[name] = fed.runtimes["stem"].handle(called, payload)
                else:
                    out[name] = bad if called == phase else replies.get(called, {"compute_s": 0.0, "phase": called.value})
            return out

    config = fed.config.model_copy(update={"output_dir": tmp_path_factory.mktemp("round"), "run_name": "r"})
    store = RunStore.open(config)
    metrics = Coordinator(config, fed.server, fed.split, OneMutated(), store).run()
    store.write_summary(metrics)
    store.close()
    record = _finite_json(store.root / "metrics.json")["rounds"][0]
    assert "stem" not in record["dropped"], record["dropped"]  # the honest client is never the one to pay
    assert all(len(reason) <= MAX_TEXT_CHARS + 40 and "\n" not in reason for reason in record["dropped"].values())
    for values in [*record["selection"].values(), *record["aligned_fraction"].values()]:
        assert all(0.0 <= v <= 1.0 for v in values.values())
    assert all(v is None or v >= 0 for v in [*record["kd_loss"].values(), *record["private_loss"].values()])
    assert write_run_report(store.root).is_file()
