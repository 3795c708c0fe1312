import numpy as np
import pytest
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from fedmkt.alignment import nearest
from fedmkt.alignment.vocab import build_vocab_map, min_edit_distance
from fedmkt.data.token_text import canonical_tokens, tokenizer_fingerprint


def brute_force(queries, targets):
    d = process.cdist(queries, targets, scorer=Levenshtein.distance, dtype=np.int32)
    return d.argmin(axis=1), d.min(axis=1)


def test_canonical_forms_agree_across_schemes(smol_tok, gemma_tok):
    smol, gemma = canonical_tokens(smol_tok), canonical_tokens(gemma_tok)
    for text in [" the", "\n", " hello", "ing", " Paris"]:
        assert text in smol and text in gemma, text
    # A SentencePiece byte-fallback token reads as its byte.
    assert gemma[gemma_tok.convert_tokens_to_ids("<0x0A>")] == "\n"
    # A byte-level token of a partial UTF-8 character and a byte-fallback token of that byte agree.
    e4 = b"\xe4".decode("utf-8", "surrogateescape")
    assert e4 in smol and e4 in gemma


def test_exact_tokens_map_to_themselves_and_a_known_inexact_case(smol_tok, gemma_tok):
    vmap = build_vocab_map(smol_tok, gemma_tok)
    smol, gemma = canonical_tokens(smol_tok), canonical_tokens(gemma_tok)
    for text in [" the", " hello", "\n", " Paris"]:
        i = smol.index(text)
        assert gemma[vmap.target_ids[i]] == text and vmap.distances[i] == 0
    assert vmap.exact_fraction > 0.9  # most SmolLM2 tokens exist in Gemma-3's larger vocabulary
    inexact = np.flatnonzero(vmap.distances > 0)
    sample = inexact[:: max(1, len(inexact) // 5)][:5]
    ids, dist = brute_force([smol[i] for i in sample], gemma)
    assert np.array_equal(vmap.distances[sample], dist)  # the true minimum
    assert np.array_equal(vmap.target_ids[sample], ids)  # and the lowest id among ties


def test_eos_maps_to_eos(smol_tok, gemma_tok):
    vmap = build_vocab_map(gemma_tok, smol_tok)
    assert vmap.target_ids[gemma_tok.eos_token_id] == smol_tok.eos_token_id


def test_search_equals_brute_force_with_lowest_id_ties():
    rng = np.random.default_rng(0)
    alphabet = list("abcde ")
    targets = ["".join(rng.choice(alphabet, size=rng.integers(0, 9))) for _ in range(400)]
    # Queries also use characters no target has (folded to one sentinel by the search).
    queries = ["".join(rng.choice(alphabet + list("xyzé中"), size=rng.integers(0, 12))) for _ in range(300)]
    ids, dist = min_edit_distance(queries, targets)
    ref_ids, ref_dist = brute_force(queries, targets)
    assert np.array_equal(dist, ref_dist)
    assert np.array_equal(ids, ref_ids)


def test_ties_go_to_the_lowest_id():
    ids, dist = min_edit_distance(["ab"], ["xb", "ax", "ab2"])
    assert ids[0] == 0 and dist[0] == 1
    ids, dist = min_edit_distance(["b", "b"], ["a", "b", "b"])
    assert list(ids) == [1, 1] and list(dist) == [0, 0]


def test_cache_is_keyed_by_both_vocabularies(smol_tok, gemma_tok, tmp_path, monkeypatch):
    monkeypatch.setenv("FEDMKT_CACHE", str(tmp_path))
    first = build_vocab_map(smol_tok, gemma_tok)
    files = list((tmp_path / "vocab_maps").glob("*.npz"))
    assert len(files) == 1 and tokenizer_fingerprint(smol_tok) in files[0].name
    again = build_vocab_map(smol_tok, gemma_tok)
    assert np.array_equal(first.target_ids, again.target_ids)


def test_search_matches_pairwise_distances_on_long_and_unicode_texts():
    # Long texts, lone surrogates (raw bytes) and characters only some texts have.
    from rapidfuzz.distance import Levenshtein

    rng = np.random.default_rng(1)
    alphabet = list("ab cé中\udc80")
    targets = ["".join(rng.choice(alphabet, size=rng.integers(0, 90))) for _ in range(300)]
    queries = ["".join(rng.choice(alphabet, size=rng.integers(1, 90))) for _ in range(120)]
    ids, dist = min_edit_distance(queries, targets)
    for q, j, d in zip(queries, ids, dist):
        all_d = [Levenshtein.distance(q, t) for t in targets]
        assert d == min(all_d) and j == all_d.index(d)


@pytest.mark.parametrize("radius_cap", [0, 1, 2, 3])
def test_every_near_search_radius_gives_the_brute_force_answer(radius_cap, monkeypatch):
    # Radius 0 leaves everything to the far search; higher radii move more queries to the index.
    monkeypatch.setattr(nearest, "MAX_RADIUS", radius_cap)
    rng = np.random.default_rng(radius_cap)
    alphabet = list("aab c")  # few letters: many variants collide, many ties
    targets = ["".join(rng.choice(alphabet, size=rng.integers(0, 7))) for _ in range(600)]
    queries = ["".join(rng.choice(alphabet + ["é"], size=rng.integers(0, 10))) for _ in range(400)]
    ids, dist = nearest.nearest_targets(queries, targets)
    ref_ids, ref_dist = brute_force(queries, targets)
    assert np.array_equal(dist, ref_dist)
    assert np.array_equal(ids, ref_ids)
    assert (dist > radius_cap).any()  # the far search had work
    assert radius_cap == 0 or ((dist > 0) & (dist <= radius_cap)).any()  # and so had the index


def test_index_budget_lowers_the_radius_for_long_strings(monkeypatch):
    lengths = np.array([40] * 50)
    assert nearest._affordable_radius(lengths, lengths) == nearest.MAX_RADIUS
    monkeypatch.setattr(nearest, "_INDEX_BUDGET", 50 * (1 + 40 + 780))  # exactly radius 2 fits
    assert nearest._affordable_radius(lengths, lengths) == 2
    rng = np.random.default_rng(3)
    targets = ["".join(rng.choice(list("abc"), size=40)) for _ in range(50)]
    queries = [t[:17] + "c" + t[18:35] for t in targets[:20]] + ["".join(rng.choice(list("abcd"), size=38))]
    ids, dist = nearest.nearest_targets(queries, targets)
    ref_ids, ref_dist = brute_force(queries, targets)
    assert np.array_equal(dist, ref_dist) and np.array_equal(ids, ref_ids)


def test_folded_characters_are_searched_once_and_cost_what_they_should():
    # Neither Greek letter is in any target: both fold to the same text, at the same distance.
    ids, dist = nearest.nearest_targets(["xα", "xβ", "x"], ["xy", "x", "zz"])
    assert list(ids) == [0, 0, 1] and list(dist) == [1, 1, 0]


@pytest.mark.parametrize("radius_cap,few_queries", [(0, 0), (2, 0), (0, 10_000)])
def test_script_blocks_of_the_far_search_give_the_brute_force_answer(radius_cap, few_queries, monkeypatch):
    # Targets mix ASCII classes, alphabetic scripts, CJK ranges and raw bytes, alone and together; blocks of
    # one length and class set get bounds from the classes a query lacks or has (few_queries=0), or blocks
    # of one length with classes unknown (every query counts as few).
    monkeypatch.setattr(nearest, "MAX_RADIUS", radius_cap)
    monkeypatch.setattr(nearest, "_FEW_QUERIES", few_queries)
    rng = np.random.default_rng(7)
    pools = [list(" "), list("abz"), list("QZ"), list("07"), list(".-"), list("éü"), list("дж"), list("कि"),
             list("中文"), list("가"), ["\udce4", "\udcb8"], list("🙂")]

    def word(max_len):
        chosen = [pools[k] for k in rng.choice(len(pools), size=rng.integers(1, 4), replace=False)]
        return "".join(rng.choice(sum(chosen, [])) for _ in range(rng.integers(0, max_len)))

    targets = [word(8) for _ in range(700)]
    queries = [word(12) for _ in range(400)] + ["ʃʒ", "xyz€"]  # classes no target has
    ids, dist = nearest.nearest_targets(queries, targets)
    ref_ids, ref_dist = brute_force(queries, targets)
    assert np.array_equal(dist, ref_dist)
    assert np.array_equal(ids, ref_ids)


@pytest.mark.parametrize("near_radius,middle_radius", [(0, 1), (0, 3), (1, 3), (2, 3)])
def test_index_over_the_remaining_queries_gives_the_brute_force_answer(near_radius, middle_radius, monkeypatch):
    # The middle stage settles what the near search left within its radius; the far search gets the rest.
    monkeypatch.setattr(nearest, "MAX_RADIUS", near_radius)
    monkeypatch.setattr(nearest, "MAX_MIDDLE_RADIUS", middle_radius)
    monkeypatch.setattr(nearest, "_MIDDLE_MIN_QUERIES", 0)
    monkeypatch.setattr(nearest, "_LONGEST_INDEXED", 9)  # longer queries skip it
    settled = []
    real = nearest._query_index_search

    def spy(q_chars, q_off, rows, *args):
        left = real(q_chars, q_off, rows, *args)
        settled.append(len(rows) - len(left))
        return left

    monkeypatch.setattr(nearest, "_query_index_search", spy)
    rng = np.random.default_rng(near_radius * 10 + middle_radius)
    alphabet = list("aab cé")  # few letters: variants collide, many ties
    targets = ["".join(rng.choice(alphabet, size=rng.integers(0, 8))) for _ in range(700)]
    targets += [t[::-1] + "x" for t in targets[:100]]  # repeated texts and ids out of length order
    queries = ["".join(rng.choice(alphabet + ["中"], size=rng.integers(0, 13))) for _ in range(500)]
    ids, dist = nearest.nearest_targets(queries, targets)
    ref_ids, ref_dist = brute_force(queries, targets)
    assert np.array_equal(dist, ref_dist)
    assert np.array_equal(ids, ref_ids)
    assert settled and settled[0] > 0  # the stage ran and settled queries
    assert (dist > middle_radius).any()  # and the far search had work too
