"""Step (3) for any pair of tokenizer families: canonical token bytes, byte-exact alignment, exact MinED map
and the special-token rules, on tokenizers trained here (tests/tokenizer_families.py) and the packaged ones."""

import itertools
import unicodedata

import numpy as np
import pytest
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from fedmkt.alignment.reference import check_alignment, decode_mismatches, whole_character_boundaries
from fedmkt.alignment.sequence import align_by_boundaries
from fedmkt.alignment.transfer import reindex
from fedmkt.alignment.vocab import UNMAPPED, build_vocab_map, map_vocabularies
from fedmkt.data.encoding import encode
from fedmkt.data.token_text import canonical_tokens, special_ids, token_bytes
from fedmkt.knowledge import KnowledgePacket
from tests.tokenizer_families import FAMILIES, SEED_TEXT, train_family

NON_ASCII = [" " + t for t in SEED_TEXT] + [
    " Zoë’s “naïve” café—¿qué? 東京 🙂🙂 ½ ﬁne",  # NFKC expands ½ and ﬁ: boundaries inside them are unknown
    " Ünïcödé ✓ 👍🏽 ǅemal — ℌ𝔢𝔩𝔩𝔬 ¿Qué tal?",
    " tabs\tand\nlines   with  spaces, and a . spaced period",
]


@pytest.fixture(scope="module")
def tokenizers(mmlu, smol_tok, gemma_tok):
    from fedmkt.data.prompts import answer_text, prompt_text

    corpus = [prompt_text(q) + answer_text(q) for q in mmlu[:600]]
    trained = {family: train_family(family, corpus, 1500) for family in FAMILIES}
    return {**trained, "smollm2": smol_tok, "gemma3": gemma_tok}


@pytest.fixture(scope="module")
def texts(mmlu):
    from fedmkt.data.prompts import answer_text

    return NON_ASCII + [answer_text(q) for q in mmlu[600:620]]


@pytest.mark.parametrize("name", [*FAMILIES, "smollm2", "gemma3"])
def test_canonical_text_is_what_the_decoder_writes_for_every_token(tokenizers, name):
    tok = tokenizers[name]
    assert len(canonical_tokens(tok)) == len(tok)
    wrong = decode_mismatches(tok)
    assert not wrong, wrong[:5]


@pytest.mark.parametrize("name", ["byte_level_bpe", "metaspace_bpe", "smollm2", "gemma3"])
def test_tokens_holding_parts_of_a_character_keep_their_raw_bytes(tokenizers, name):
    tok = tokenizers[name]
    text = " 中文🙂 naïve 𠜎𪚥"  # rare CJK extension characters fall back to bytes even in large vocabularies
    ids = tok(text, add_special_tokens=False)["input_ids"]
    pieces = [token_bytes(canonical_tokens(tok)[i]) for i in ids]
    assert b"".join(pieces).strip() == text.encode().strip()
    assert any(not _is_utf8(p) for p in pieces)  # at least one token is a partial character


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_every_family_places_answer_boundaries(tokenizers, texts):
    for name, tok in tokenizers.items():
        for text in texts:
            e = encode(tok, 0, "Q:", text, 512)
            known = e.loss_boundaries >= 0
            assert known[0] and e.loss_boundaries[0] == 0
            assert np.all(np.diff(e.loss_boundaries[known]) >= 0)
            assert e.answer_ends.max() <= len(text.encode()), (name, text)
            if name != "unigram" or unicodedata.normalize("NFKC", text) == text:  # only NFKC's expansions hide one
                assert known.all(), (name, text)


def test_alignment_is_byte_exact_on_every_family_pair(tokenizers, texts):
    inside_a_character = 0
    for a, b in itertools.permutations(tokenizers, 2):
        shared = missed = wrong = 0
        for text in texts:
            r, s = encode(tokenizers[a], 0, "Q:", text, 512), encode(tokenizers[b], 0, "Q:", text, 512)
            aligned = align_by_boundaries(r, s)
            # The reference: each tokenizer's own character offsets, at whole characters only.
            check = check_alignment(aligned, whole_character_boundaries(tokenizers[a], text),
                                    whole_character_boundaries(tokenizers[b], text))
            shared, missed, wrong = shared + check.shared, missed + check.missed, wrong + check.wrong
            for p, q in check.inside:
                inside_a_character += 1
                assert r.loss_boundaries[p] == s.loss_boundaries[q]
        assert shared > 100 and missed == 0 and wrong == 0, (a, b, shared, missed, wrong)
    assert inside_a_character > 0  # byte-level pieces matched to byte-fallback pieces of one character


def test_a_prepended_space_token_is_not_matched_in_place_of_the_answer_start(tokenizers):
    # Unigram's "always" scheme puts a lone "▁" before "中文": it stands for no text of the answer, so the
    # position predicting it matches nothing and the next one (predicting 中) matches the other side's first.
    uni, smol = tokenizers["unigram"], tokenizers["smollm2"]
    r, s = encode(uni, 0, "Q:", "中文", 64), encode(smol, 0, "Q:", "中文", 64)
    assert uni.convert_ids_to_tokens(r.answer_ids.tolist()) == ["\u2581", "中", "文"]
    assert r.loss_boundaries.tolist() == [0, 0, 3] and s.loss_boundaries.tolist() == [0, 3]
    assert align_by_boundaries(r, s).tolist() == [-1, 0, 1]


def brute_force(queries, targets):
    d = process.cdist(queries, targets, scorer=Levenshtein.distance, dtype=np.int32)
    return d.argmin(axis=1), d.min(axis=1)


PAIRS = [(a, b) for a, b in itertools.permutations([*FAMILIES, "smollm2"], 2)] + [
    ("byte_level_bpe", "gemma3"), ("gemma3", "wordpiece")]


@pytest.mark.parametrize("sender,receiver", PAIRS)
def test_vocab_map_is_exact_and_follows_the_special_token_rules(tokenizers, sender, receiver):
    s_tok, r_tok = tokenizers[sender], tokenizers[receiver]
    ids, dist = map_vocabularies(s_tok, r_tok)
    s_text, r_text = canonical_tokens(s_tok), canonical_tokens(r_tok)
    s_special, r_special = set(special_ids(s_tok)), set(special_ids(r_tok))
    targets = np.array([j for j in range(len(r_text)) if j not in r_special])
    sample = [i for i in np.random.default_rng(0).choice(len(s_text), 300, replace=False) if i not in s_special]
    ref_ids, ref_dist = brute_force([s_text[i] for i in sample], [r_text[j] for j in targets])
    assert np.array_equal(dist[sample], ref_dist)
    assert np.array_equal(ids[sample], targets[ref_ids])  # ties: the lowest receiver id
    # Special tokens: EOS to EOS; no text token lands on a receiver special token.
    assert ids[s_tok.eos_token_id] == r_tok.eos_token_id and dist[s_tok.eos_token_id] == 0
    text_tokens = np.array(sorted(set(range(len(s_text))) - s_special))
    assert not np.isin(ids[text_tokens], list(r_special)).any()
    for i in s_special - {s_tok.eos_token_id}:
        assert ids[i] == UNMAPPED or (ids[i] in r_special and r_text[ids[i]] == s_text[i])


def test_special_tokens_without_a_counterpart_drop_out_of_soft_targets(tokenizers):
    s_tok, r_tok = tokenizers["wordpiece"], tokenizers["byte_level_bpe"]
    vmap = build_vocab_map(s_tok, r_tok, use_cache=False)
    cls, word = s_tok.convert_tokens_to_ids("[CLS]"), s_tok.convert_tokens_to_ids("the")
    assert vmap.target_ids[cls] == UNMAPPED and vmap.target_ids[word] >= 0
    packet = KnowledgePacket(sender="s", tokenizer=vmap.sender, vocab_size=len(s_tok), example_ids=np.array([1]),
                             ce=np.array([1.0], dtype=np.float32), offsets=np.array([0, 2]),
                             topk_ids=np.array([[cls, word], [cls, cls]], dtype=np.int32),
                             topk_logprobs=np.log(np.array([[0.5, 0.5], [0.9, 0.1]])).astype(np.float16))
    labels = np.array([7, 9])
    out = reindex(packet, 0, np.array([0, 1]), vmap, labels)
    # Row 0: [CLS]'s half is dropped, the rest renormalised onto "the"; row 1: nothing maps, one-hot label.
    assert out.ids[0].tolist() == [0, vmap.target_ids[word]] and np.allclose(out.probs[0], [0.0, 1.0])
    assert out.ids[1, 0] == 9 and np.allclose(out.probs[1], [1.0, 0.0])


def test_an_older_cached_map_version_is_not_reused(tokenizers, tmp_path, monkeypatch):
    from fedmkt.alignment import vocab

    monkeypatch.setenv("FEDMKT_CACHE", str(tmp_path))
    sender, receiver = tokenizers["wordpiece"], tokenizers["unigram"]
    fresh = build_vocab_map(sender, receiver, use_cache=False)
    current = vocab._cache_file(fresh.sender, fresh.receiver,
                                (vocab.end_of_turn_id(sender), vocab.end_of_turn_id(receiver)))
    older = current.with_name(current.name.replace(vocab.MAP_VERSION, "mined-2"))
    wrong = np.zeros_like(fresh.target_ids)
    older.parent.mkdir(parents=True)
    np.savez(older, target_ids=wrong, distances=fresh.distances)  # what the last version left behind
    assert np.array_equal(build_vocab_map(sender, receiver).target_ids, fresh.target_ids)
    assert current.is_file()
    # The cache is used at all: a map planted under the current name is what comes back.
    np.savez(current, target_ids=wrong, distances=fresh.distances)
    assert np.array_equal(build_vocab_map(sender, receiver).target_ids, wrong)
