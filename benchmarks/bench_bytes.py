"""Bytes a client sends per round: our packet vs pickled nested lists, from the real SmolLM2 on MMLU.

  like_for_like: the same positions (answer positions only), ids and logits as nested Python lists
  reference:     the reference layout, per-step top-K logits and indices for every token position of
                 every public example (prompt included), as nested Python lists
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import torch

from benchmarks.common import public_questions, record
from fedmkt.data.token_text import tokenizer_fingerprint
from fedmkt.config import ModelSpec
from fedmkt.data.encoding import encode_questions
from fedmkt.models import load_model
from fedmkt.training import ComputeClock, extract_knowledge

N = int(os.environ.get("FEDMKT_BENCH_BYTES_N", "48"))
K = 16


def main() -> None:
    loaded = load_model(ModelSpec(source="smollm2-135m-instruct"))
    model, tok = loaded.model.eval(), loaded.tokenizer
    examples = encode_questions(tok, public_questions(N), 256)
    packet = extract_knowledge(model, examples, tok.pad_token_id, K, 4, "client", tokenizer_fingerprint(tok),
                               model.config.vocab_size, ComputeClock())
    ours = len(packet.to_bytes())
    like = {"ce": packet.ce.tolist(),
            "ids": [packet.topk_ids[packet.rows(n)].tolist() for n in range(N)],
            "logits": [packet.topk_logprobs[packet.rows(n)].astype(np.float32).tolist() for n in range(N)]}
    ref_ids, ref_logits = [], []
    with torch.no_grad():
        for e in examples:
            logits = model(input_ids=torch.from_numpy(e.input_ids)[None]).logits[0].float()
            values, indices = logits.topk(K, dim=-1)
            ref_ids.append(indices.tolist())
            ref_logits.append(values.tolist())
    reference = {"metric_ce": packet.ce.tolist(), "per_step_indices": ref_ids, "per_step_logits": ref_logits}
    like_b, ref_b = len(pickle.dumps(like)), len(pickle.dumps(reference))
    record("bytes", [{"benchmark": "bytes_per_client_round", "examples": N, "top_k": K, "ours_bytes": ours,
                      "like_for_like_pickle_bytes": like_b, "reference_layout_pickle_bytes": ref_b,
                      "ratio_like_for_like": round(like_b / ours, 2), "ratio_reference": round(ref_b / ours, 1)}])


if __name__ == "__main__":
    main()
