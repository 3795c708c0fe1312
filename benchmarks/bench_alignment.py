"""Sequence alignment of public examples (SmolLM2 receiver, Gemma-3 sender), ours vs plain-Python DTW.

Reference: DTW over each example's whole token sequence in Python loops, recomputed every round
(as FuseLLM / FATE-LLM do). Ours: compiled DTW on the same input (same path required), and the
aligner we actually run: a merge of the byte boundaries each encoding carries, DTW only where an
encoding has none, computed once and cached.
"""

from __future__ import annotations

import os

import numpy as np

from benchmarks.common import public_questions, record, timed
from fedmkt.alignment.reference import python_dtw
from fedmkt.alignment.sequence import SequenceAligner, dtw_matches, one_to_one
from fedmkt.data.token_text import canonical_tokens
from fedmkt.data.encoding import encode_questions
from fedmkt.models import load_tokenizer

N = int(os.environ.get("FEDMKT_BENCH_ALIGN_N", "200"))


def texts(encoded, canon):
    return [canon[t] for t in encoded.input_ids.tolist()]


def main() -> None:
    smol_tok, gemma_tok = load_tokenizer("smollm2-135m-instruct"), load_tokenizer("gemma3-270m")
    smol_c, gemma_c = canonical_tokens(smol_tok), canonical_tokens(gemma_tok)
    questions = public_questions(N)
    recv, send = encode_questions(smol_tok, questions, 512), encode_questions(gemma_tok, questions, 512)
    pairs = [(texts(r, smol_c), texts(s, gemma_c)) for r, s in zip(recv, send)]

    ref_paths, ref_s = timed(lambda: [python_dtw(a, b) for a, b in pairs])
    dtw_matches(["a"], ["a"])  # compile once (numba caches it on disk)
    our_paths, dtw_s = timed(lambda: [dtw_matches(a, b) for a, b in pairs])
    aligner = SequenceAligner(smol_c, gemma_c)
    ours, ours_s = timed(lambda: [aligner.align(r, s) for r, s in zip(recv, send)])
    _, cached_s = timed(lambda: [aligner.align(r, s) for r, s in zip(recv, send)])

    # Agreement with the reference on loss positions where both define a counterpart.
    agree = both = 0
    for (a, b), r, s, mine, path in zip(pairs, recv, send, ours, ref_paths):
        full = one_to_one(path, a, b, len(a))
        ref = full[r.answer_start - 1: len(r.input_ids) - 1] - (s.answer_start - 1)
        ref[(full[r.answer_start - 1: len(r.input_ids) - 1] < 0) | (ref < 0) | (ref >= s.n_loss)] = -1
        defined = (ref >= 0) & (mine >= 0)
        both += int(defined.sum())
        agree += int((ref[defined] == mine[defined]).sum())
    tokens = sum(len(a) + len(b) for a, b in pairs)
    record("alignment", [
        {"benchmark": "sequence_alignment", "examples": N, "tokens": tokens, "reference_python_dtw_s": round(ref_s, 3),
         "ours_compiled_dtw_s": round(dtw_s, 4), "speedup_dtw": round(ref_s / dtw_s, 1),
         "identical_dtw_paths": all(p == q for p, q in zip(ref_paths, our_paths))},
        {"benchmark": "sequence_alignment", "examples": N, "ours_aligner_s": round(ours_s, 4),
         "speedup_aligner": round(ref_s / ours_s, 1), "later_rounds_cached_s": round(cached_s, 5),
         "dtw_fallbacks": aligner.used_dtw, "positions_both_defined": both,
         "agreement_where_both_defined": round(agree / max(both, 1), 4),
         "aligned_fraction_ours": round(float(np.mean(np.concatenate(ours) >= 0)), 3)},
    ])


if __name__ == "__main__":
    main()
