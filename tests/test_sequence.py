import numpy as np
import pytest

from fedmkt.alignment.reference import python_dtw
from fedmkt.alignment.sequence import SequenceAligner, align_by_boundaries, align_by_dtw, dtw_matches, one_to_one
from fedmkt.data.token_text import canonical_tokens
from fedmkt.data.encoding import encode

PROMPT = "Question: Which unbelievably antidisestablishmentarian kilograms?\nAnswer:"
ANSWER = " B. Counterrevolutionaries' 12345 naïve façades"


def test_tokenizations_differ_and_byte_boundaries_align(smol_tok, gemma_tok):
    # SmolLM2 (49k) cuts the rare words finer than Gemma-3 (262k): some of its boundaries have no twin.
    r = encode(smol_tok, 1, PROMPT, ANSWER, 256)
    s = encode(gemma_tok, 1, PROMPT, ANSWER, 256)
    assert r.boundaries_known and s.boundaries_known
    assert list(r.answer_ids) != list(s.answer_ids)
    alignment = align_by_boundaries(r, s)
    assert len(alignment) == r.n_loss
    hit = alignment >= 0
    assert hit[0]  # the prompt/answer boundary is shared by construction
    assert np.array_equal(r.loss_boundaries[hit], s.loss_boundaries[alignment[hit]])
    # every boundary both share is found, and no other
    shared = np.isin(r.loss_boundaries, s.loss_boundaries)
    assert np.array_equal(hit, shared)
    assert 0 < hit.mean() < 1


def test_dtw_fallback_agrees_with_offsets_where_defined(smol_tok, gemma_tok):
    r = encode(smol_tok, 1, PROMPT, ANSWER, 256)
    s = encode(gemma_tok, 1, PROMPT, ANSWER, 256)
    by_offsets = align_by_boundaries(r, s)
    by_dtw = align_by_dtw(r, s, canonical_tokens(smol_tok), canonical_tokens(gemma_tok))
    both = (by_offsets >= 0) & (by_dtw >= 0)
    assert both.sum() >= 3
    assert np.array_equal(by_offsets[both], by_dtw[both])


def test_compiled_dtw_equals_python_reference():
    rng = np.random.default_rng(1)
    for _ in range(20):
        a = ["".join(rng.choice(list("abc"), size=rng.integers(1, 4))) for _ in range(rng.integers(1, 15))]
        b = ["".join(rng.choice(list("abc"), size=rng.integers(1, 4))) for _ in range(rng.integers(1, 15))]
        assert dtw_matches(a, b) == python_dtw(a, b)


def test_one_to_one_keeps_only_identical_single_matches():
    a, b = [" the", " cat", "s"], [" the", " cats"]
    out = one_to_one(dtw_matches(a, b), a, b, len(a))
    assert out[0] == 0 and out[1] == -1 and out[2] == -1


def test_aligner_caches_and_falls_back(smol_tok, gemma_tok):
    r = encode(gemma_tok, 7, PROMPT, ANSWER, 256)
    s = encode(smol_tok, 7, PROMPT, ANSWER, 256)
    broken = type(s)(uid=s.uid, input_ids=s.input_ids, answer_start=s.answer_start, answer_ends=None)
    aligner = SequenceAligner(canonical_tokens(gemma_tok), canonical_tokens(smol_tok))
    first = aligner.align(r, broken)
    assert aligner.used_dtw == 1
    assert aligner.align(r, broken) is first and aligner.used_dtw == 1
    with pytest.raises(ValueError, match="different examples"):
        aligner.align(r, encode(smol_tok, 8, PROMPT, ANSWER, 256))
