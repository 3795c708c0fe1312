"""Step (3) over pairs of tokenizer families: vocabulary-map time and exactness, alignment coverage.

Tokenizers: the two packaged ones (SmolLM2 byte-level BPE 49k, Gemma-3 SentencePiece BPE with byte
fallback 262k), seven real ones from llama.cpp's vocabulary files on PyPI (benchmarks/real_tokenizers.py:
GPT-2, Llama-3, Qwen2, Command-R, Llama-2, Phi-3, BERT WordPiece), and a SentencePiece Unigram trained
here on 6,000 MMLU questions and the texts below (no Unigram vocabulary ships on PyPI).

Per family: canonical token texts checked against the tokenizer's own `decode` on every token.
Per ordered pair (sender -> receiver):
- map_s: the MinED map of the whole sender vocabulary (canonical texts already built; numba kernels
  loaded), on this machine;
- exact: the map's distances and ids equal the brute-force minimum (rapidfuzz cdist over every
  receiver text token, lowest id on ties) on a random sample of sender tokens;
- alignment on answer texts (MMLU questions and BIG-bench examples in many scripts, see TEXTS): of the
  boundaries both tokenizations share at whole characters (each tokenizer's own character offsets,
  alignment/reference.py), the share our aligner matches, and how many matched pairs disagree with
  them; plus pairs matched inside a character (byte-level pieces against byte-fallback pieces).

FEDMKT_BENCH_PAIRS_SAMPLE (default 200) sets the sample, FEDMKT_BENCH_PAIRS_TEXTS the texts per source.
"""

from __future__ import annotations

import itertools
import os
import time

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from benchmarks.common import record
from benchmarks.real_tokenizers import VOCABS, load_real_tokenizer
from fedmkt.alignment.reference import check_alignment, decode_mismatches, whole_character_boundaries
from fedmkt.alignment.nearest import warm_up
from fedmkt.alignment.sequence import align_by_boundaries
from fedmkt.alignment.vocab import map_vocabularies
from fedmkt.data.encoding import encode
from fedmkt.data.token_text import canonical_tokens, special_ids
from fedmkt.models import load_tokenizer

SAMPLE = int(os.environ.get("FEDMKT_BENCH_PAIRS_SAMPLE", "200"))
PER_SOURCE = int(os.environ.get("FEDMKT_BENCH_PAIRS_TEXTS", "60"))
BIGBENCH = ["language_identification", "persian_idioms", "kannada", "emoji_movie"]


def texts() -> list[str]:
    from fedmkt.data.bigbench import load_bigbench
    from fedmkt.data.mmlu import load_mmlu
    from fedmkt.data.prompts import answer_text, prompt_text

    rng = np.random.default_rng(0)
    mmlu = load_mmlu()
    out = [" " + prompt_text(mmlu[i]).split("\n")[0] + answer_text(mmlu[i])
           for i in rng.choice(len(mmlu), PER_SOURCE, replace=False)]
    for task in BIGBENCH:
        questions = [q for q in load_bigbench([task])]
        for i in rng.choice(len(questions), min(PER_SOURCE, len(questions)), replace=False):
            out.append(" " + questions[i].question.strip()[-600:])
    return out


def tokenizers(corpus: list[str]) -> dict:
    from tests.tokenizer_families import train_family

    toks = {"smollm2": load_tokenizer("smollm2-135m-instruct"), "gemma3": load_tokenizer("gemma3-270m")}
    toks.update({name: load_real_tokenizer(name) for name in VOCABS})
    from fedmkt.data.mmlu import load_mmlu
    from fedmkt.data.prompts import answer_text, prompt_text

    training = [prompt_text(q) + answer_text(q) for q in load_mmlu()[:6000]] + corpus
    toks["unigram (trained)"] = train_family("unigram", training, 16000)
    return toks


def canonical_check(name: str, tok) -> dict:
    start = time.perf_counter()
    canonical_tokens(tok)
    built_s = time.perf_counter() - start
    wrong = len(decode_mismatches(tok))
    special = special_ids(tok)
    return {"benchmark": "canonical_text", "tokenizer": name, "vocab": len(tok), "special": len(special),
            "checked_against_decode": len(tok) - len(special), "mismatches": wrong, "build_s": round(built_s, 2)}


def pair(sender: str, receiver: str, toks: dict, encoded: dict, refs: dict, corpus: list[str]) -> dict:
    s_tok, r_tok = toks[sender], toks[receiver]
    start = time.perf_counter()
    ids, dist = map_vocabularies(s_tok, r_tok)
    map_s = time.perf_counter() - start
    s_text, r_text = canonical_tokens(s_tok), canonical_tokens(r_tok)
    r_special, s_special = set(special_ids(r_tok)), set(special_ids(s_tok))
    targets = np.array([j for j in range(len(r_text)) if j not in r_special])
    rng = np.random.default_rng(len(s_text) * 7 + len(r_text))
    sample = [i for i in rng.choice(len(s_text), SAMPLE, replace=False) if i not in s_special]
    d = process.cdist([s_text[i] for i in sample], [r_text[j] for j in targets], scorer=Levenshtein.distance,
                      dtype=np.int32, workers=-1)
    exact = bool(np.array_equal(dist[sample], d.min(axis=1)) and np.array_equal(ids[sample], targets[d.argmin(axis=1)]))
    checks = [check_alignment(align_by_boundaries(encoded[receiver][k], encoded[sender][k]), refs[receiver][k],
                              refs[sender][k]) for k in range(len(corpus))]
    shared, missed = sum(c.shared for c in checks), sum(c.missed for c in checks)
    wrong, inside = sum(c.wrong for c in checks), sum(len(c.inside) for c in checks)
    return {"benchmark": "tokenizer_pair", "sender": sender, "receiver": receiver,
            "vocab": f"{len(s_text)} -> {len(r_text)}", "map_s": round(map_s, 2), "exact_on_sample": exact,
            "sample": len(sample), "mapped_verbatim": round(float((dist[dist >= 0] == 0).mean()), 3),
            "shared_boundaries": shared, "aligned_share": round(1 - missed / max(shared, 1), 4),
            "wrong": wrong, "aligned_inside_characters": inside}


def main() -> None:
    warm_up()  # load (or compile once) the numba kernels
    corpus = texts()
    toks = tokenizers(corpus)
    rows = [canonical_check(name, tok) for name, tok in toks.items()]
    for row in rows:
        print(row, flush=True)
    encoded = {n: [encode(t, k, "Q:", text, 4096) for k, text in enumerate(corpus)] for n, t in toks.items()}
    refs = {n: [whole_character_boundaries(t, text) for text in corpus] for n, t in toks.items()}
    for sender, receiver in itertools.permutations(toks, 2):
        rows.append(pair(sender, receiver, toks, encoded, refs, corpus))
        print(rows[-1], flush=True)
    record("tokenizers", rows)
    pairs = [r for r in rows if r["benchmark"] == "tokenizer_pair"]
    print(f"{len(pairs)} pairs: all exact {all(r['exact_on_sample'] for r in pairs)}, "
          f"max map {max(r['map_s'] for r in pairs)} s, min aligned share {min(r['aligned_share'] for r in pairs)}, "
          f"wrong {sum(r['wrong'] for r in pairs)}")


if __name__ == "__main__":
    main()
