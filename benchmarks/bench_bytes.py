"""Bytes a party sends per round, and what 8-bit log-probabilities change, from the real models on MMLU.

Bytes (packets of the real SmolLM2 client and the real Gemma-3 server on the same public questions):
  like_for_like: the same positions (answer positions only), ids and log-probs as pickled nested lists
  reference:     the reference layout, per-step top-K logits and indices for every token position of
                 every public example (prompt included), as nested Python lists (SmolLM2 only)
  ours, four ways: float16 or 8-bit log-probs, each plain (version-1 layout) or xz-compressed.
Effect of 8-bit log-probs: the soft targets' KL to the float16 ones; then one real-model FedMKT round
run twice from the same seed, with float16 and with 8-bit packets: DualMinCE selection, KD losses, and
each party's accuracy on the same evaluation questions, paired (difference with its 95% interval).
"""

from __future__ import annotations

import os
import pickle
import tempfile

import numpy as np
import torch

from benchmarks.common import public_questions, record
from fedmkt.alignment.transfer import softmax_rows
from fedmkt.config import ModelSpec, parse_config
from fedmkt.data.encoding import encode_questions
from fedmkt.data.token_text import tokenizer_fingerprint
from fedmkt.federation.local import LocalFederation
from fedmkt.knowledge import KnowledgePacket
from fedmkt.models import load_model
from fedmkt.stats import paired_difference
from fedmkt.training import ComputeClock, extract_knowledge

N = int(os.environ.get("FEDMKT_BENCH_BYTES_N", "48"))
ROUND_SIZE = int(os.environ.get("FEDMKT_BENCH_BYTES_ROUND_SIZE", "24"))
EVAL_SIZE = int(os.environ.get("FEDMKT_BENCH_BYTES_EVAL", "150"))
K = 16


def nested(packet: KnowledgePacket) -> dict:
    n = len(packet.example_ids)
    return {"ce": packet.ce.tolist(), "ids": [packet.topk_ids[packet.rows(i)].tolist() for i in range(n)],
            "logits": [packet.topk_logprobs[packet.rows(i)].astype(np.float32).tolist() for i in range(n)]}


def packet_rows(source: str, role: str) -> tuple[list[dict], dict]:
    loaded = load_model(ModelSpec(source=source))
    model, tok = loaded.model.eval(), loaded.tokenizer
    examples = encode_questions(tok, public_questions(N), 256)
    packet = extract_knowledge(model, examples, tok.pad_token_id, K, 4, role, tokenizer_fingerprint(tok),
                               model.config.vocab_size, ComputeClock())
    like = len(pickle.dumps(nested(packet)))
    row = {"benchmark": "bytes_per_party_round", "sender": f"{role} ({source})", "examples": N, "top_k": K,
           "like_for_like_pickle_bytes": like}
    for bits in (16, 8):
        for compress in (False, True):
            size = len(packet.to_bytes(logprob_bits=bits, compress=compress))
            key = f"bits{bits}_{'xz' if compress else 'plain'}"
            row[f"{key}_bytes"], row[f"{key}_ratio"] = size, round(like / size, 2)
    coded = KnowledgePacket.from_bytes(packet.to_bytes(logprob_bits=8))
    assert np.array_equal(coded.ce, packet.ce) and np.array_equal(coded.topk_ids, packet.topk_ids)
    p, q = softmax_rows(packet.topk_logprobs).astype(np.float64), softmax_rows(coded.topk_logprobs).astype(np.float64)
    kl = (p * (np.log(np.maximum(p, 1e-30)) - np.log(np.maximum(q, 1e-30)))).sum(axis=1)
    row.update({"bits8_target_kl_mean": float(kl.mean()), "bits8_target_kl_max": float(kl.max()),
                "bits8_max_prob_change": float(np.abs(p - q).max())})
    extra = {}
    if role == "client":  # the reference layout: every position's top-K, prompt included
        ref_ids, ref_logits = [], []
        with torch.no_grad():
            for e in examples:
                logits = model(input_ids=torch.from_numpy(e.input_ids)[None]).logits[0].float()
                values, indices = logits.topk(K, dim=-1)
                ref_ids.append(indices.tolist())
                ref_logits.append(values.tolist())
        extra = {"reference_layout_pickle_bytes": len(pickle.dumps(
            {"metric_ce": packet.ce.tolist(), "per_step_indices": ref_ids, "per_step_logits": ref_logits}))}
    return [row], extra


def one_round(bits: int, tmp: str):
    config = parse_config({"output_dir": tmp, "run_name": f"bits{bits}", "seed": 11,
                           "data": {"public_size": ROUND_SIZE, "private_size": ROUND_SIZE, "eval_size": EVAL_SIZE},
                           "fedmkt": {"rounds": 1, "logprob_bits": bits}})
    federation = LocalFederation(config)
    federation.prepare()
    record = federation.run_round(1)
    record.evaluation = federation.coordinator.evaluate(1)
    return record


def round_rows() -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        wide, narrow = one_round(16, tmp), one_round(8, tmp)
    rows = []
    for party in sorted(wide.evaluation):
        a_scores, b_scores = wide.evaluation[party], narrow.evaluation[party]
        a = np.concatenate([a_scores.domains[d]["per_question"] for d in sorted(a_scores.domains)])
        b = np.concatenate([b_scores.domains[d]["per_question"] for d in sorted(b_scores.domains)])
        d = paired_difference(a, b)
        rows.append({"benchmark": "bits8_vs_bits16_one_round", "party": party, "questions": d.n,
                     "acc_bits16": round(float(a.mean()), 4), "acc_bits8": round(float(b.mean()), 4),
                     "difference": round(d.difference, 4), "interval95": [round(d.low, 4), round(d.high, 4)],
                     "questions_changed": int((a != b).sum()),
                     "kd_loss_bits16": round(wide.kd_loss.get(party, float("nan")), 5),
                     "kd_loss_bits8": round(narrow.kd_loss.get(party, float("nan")), 5),
                     "selection_identical": wide.selection.get(party) == narrow.selection.get(party)})
    return rows


def main() -> None:
    client, extra = packet_rows("smollm2-135m-instruct", "client")
    client[0].update(extra)
    client[0]["ratio_reference"] = round(extra["reference_layout_pickle_bytes"] / client[0]["bits8_xz_bytes"], 1)
    server, _ = packet_rows("gemma3-270m", "server")
    record("bytes", client + server + round_rows())


if __name__ == "__main__":
    main()
