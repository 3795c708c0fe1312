"""MinED vocabulary mapping SmolLM2 <-> Gemma-3, ours vs the brute-force reference, side by side.

Ours: the map as fedmkt builds it (`map_vocabularies`: text tokens by MinED, special tokens by rule).
Reference (as in FuseLLM / FATE-LLM): for each sender token, an exact-match test against the
receiver's token list, else a Python loop computing the edit distance to every receiver token (one C
call per pair) and taking the minimum; here over the receiver's text tokens, the targets ours searches. It is timed on a random sample of sender tokens and
extrapolated to the whole vocabulary, divided by the core count (the reference runs a process pool).
Ours is timed with its compiled kernels already loaded: numba compiles them once per install (about
6 s here) and caches them on disk.
"""

from __future__ import annotations

import os

import numpy as np

from benchmarks.common import record, timed
from fedmkt.alignment.nearest import warm_up
from fedmkt.alignment.reference import brute_force_min_distance
from fedmkt.alignment.vocab import map_vocabularies
from fedmkt.data.token_text import canonical_tokens, special_ids
from fedmkt.models import load_tokenizer

SAMPLE = int(os.environ.get("FEDMKT_BENCH_VOCAB_SAMPLE", "1000"))


def direction(sender_tok, receiver_tok, label: str, seed: int) -> dict:
    (_, ours_d), ours_s = timed(map_vocabularies, sender_tok, receiver_tok)
    sender, receiver = canonical_tokens(sender_tok), canonical_tokens(receiver_tok)
    special = set(special_ids(receiver_tok))
    targets = [t for j, t in enumerate(receiver) if j not in special]
    rng = np.random.default_rng(seed)
    text_tokens = np.setdiff1d(np.arange(len(sender)), special_ids(sender_tok))
    sample = rng.choice(text_tokens, size=SAMPLE, replace=False)
    ref_d, ref_s = timed(lambda: [brute_force_min_distance(sender[i], targets) for i in sample])
    cores = os.cpu_count() or 1
    ref_full = ref_s / SAMPLE * len(sender) / cores
    return {"benchmark": "vocab_mapping", "direction": label, "vocab": f"{len(sender)} -> {len(receiver)}",
            "ours_s": round(ours_s, 2), "reference_extrapolated_s": round(ref_full, 1),
            "speedup": round(ref_full / ours_s, 1), "sample": SAMPLE,
            "same_min_distance_on_sample": bool(np.array_equal(ours_d[sample], np.array(ref_d)))}


def main() -> None:
    warm_up()  # load (or compile once) the numba kernels
    smol, gemma = load_tokenizer("smollm2-135m-instruct"), load_tokenizer("gemma3-270m")
    canonical_tokens(smol), canonical_tokens(gemma)  # built once per vocabulary, outside the timing
    rows = [direction(smol, gemma, "smollm2 -> gemma3", 0), direction(gemma, smol, "gemma3 -> smollm2", 1)]
    rows.append({"benchmark": "vocab_mapping", "direction": "both", "ours_s": round(sum(r["ours_s"] for r in rows), 2),
                 "reference_extrapolated_s": round(sum(r["reference_extrapolated_s"] for r in rows), 1),
                 "speedup": round(sum(r["reference_extrapolated_s"] for r in rows) / sum(r["ours_s"] for r in rows), 1)})
    record("vocab", rows)


if __name__ == "__main__":
    main()
