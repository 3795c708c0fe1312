import numpy as np
import pytest

from fedmkt.data.encoding import collate, encode
from fedmkt.data.mmlu import DOMAINS, SUBJECT_DOMAIN
from fedmkt.data.prompts import answer_text, prompt_text
from fedmkt.config import parse_config
from fedmkt.data.splits import federated_split


def benchmark_split(questions, client_domains, public_size, private_size, eval_size, eval_domains, seed):
    config = parse_config({"seed": seed, "clients": [{"name": k, "domains": v} for k, v in client_domains.items()],
                           "data": {"public_size": public_size, "private_size": private_size, "eval_size": eval_size,
                                    "eval_domains": eval_domains}})
    return federated_split(config, presets=questions)


def test_mmlu_loads_from_the_package(mmlu):
    assert len(mmlu) > 13900  # 14,042 answered rows, 105 of them verbatim repeats
    subjects = {q.subject for q in mmlu}
    assert subjects <= set(SUBJECT_DOMAIN) and len(subjects) >= 56
    assert all(0 <= q.answer < 4 and len(q.choices) == 4 for q in mmlu)


def test_split_is_disjoint_and_by_domain(mmlu):
    split = benchmark_split(mmlu, {"a": ["stem"], "b": ["humanities", "other"]}, 20, 30, 10, ["stem", "social_sciences"], 0)
    uids = [q.uid for q in split.public] + [q.uid for qs in split.private.values() for q in qs] + \
           [q.uid for qs in split.evaluation.values() for q in qs]
    assert len(uids) == len(set(uids)) == 20 + 60 + 20
    assert {q.domain for q in split.private["a"]} == {"stem"}
    assert {q.domain for q in split.private["b"]} == {"humanities", "other"}
    assert {q.domain for q in split.public} == set(DOMAINS)
    again = benchmark_split(mmlu, {"a": ["stem"], "b": ["humanities", "other"]}, 20, 30, 10, ["stem", "social_sciences"], 0)
    assert [q.uid for q in again.private["b"]] == [q.uid for q in split.private["b"]]
    with pytest.raises(ValueError, match="unknown domain"):
        benchmark_split(mmlu, {"a": ["math"]}, 1, 1, 1, [], 0)


def test_encoding_marks_the_answer_and_its_boundaries(mmlu, smol_tok, gemma_tok):
    q = mmlu[0]
    prompt, answer = prompt_text(q), answer_text(q)
    for tok in (smol_tok, gemma_tok):
        e = encode(tok, q.uid, prompt, answer, 512)
        assert tok.decode(e.answer_ids) == answer
        assert e.loss_boundaries[0] == 0  # first loss position: the prompt's end, where the answer starts
        assert e.answer_ends[-1] == len(answer.lstrip().encode()) and e.boundaries_known  # from its first character
    assert gemma_tok.bos_token_id == encode(gemma_tok, 0, prompt, answer, 512).input_ids[0]
    short = encode(gemma_tok, q.uid, prompt, answer, 24)
    assert len(short.input_ids) == 24 and short.input_ids[0] == gemma_tok.bos_token_id
    assert gemma_tok.decode(short.answer_ids) == answer


def test_left_padded_batch_puts_answers_at_the_end(mmlu, smol_tok):
    examples = [encode(smol_tok, q.uid, prompt_text(q), answer_text(q), 256) for q in mmlu[:3]]
    batch = collate(examples, smol_tok.pad_token_id)
    for row, e in enumerate(examples):
        assert batch.loss_mask[row].sum() == e.n_loss
        assert np.array_equal(batch.labels[row][batch.loss_mask[row]].numpy(), e.answer_ids)
        assert batch.input_ids[row, -1] == e.input_ids[-1]
        first = batch.input_ids.shape[1] - len(e.input_ids)
        assert batch.position_ids[row, first] == 0 and batch.position_ids[row, -1] == len(e.input_ids) - 1


def test_mmlu_verbatim_duplicates_are_one_question(mmlu):
    import json

    from fedmkt.data.mmlu import mmlu_file

    rows = [json.loads(line) for line in open(mmlu_file(), encoding="utf-8")]
    keys = [(r["question"].strip(), *(str(r[f"answer_{c}"]).strip() for c in "abcd")) for r in rows
            if str(r.get("correct_answer", "")).strip().upper() in list("ABCD")]
    assert len(keys) - len(set(keys)) > 100  # the packaged file repeats items verbatim...
    assert len({(q.question, *q.choices) for q in mmlu}) == len(mmlu) == len(set(keys))  # ...loaded once each
    # At a realistic size no evaluation question has a verbatim copy in a training set.
    split = benchmark_split(mmlu, {f"c{i}": [d] for i, d in enumerate(DOMAINS)}, 500, 2000, 200, list(DOMAINS), 0)
    text = lambda q: (q.question, q.choices)
    evaluation = {text(q) for qs in split.evaluation.values() for q in qs}
    training = {text(q) for q in split.public} | {text(q) for qs in split.private.values() for q in qs}
    assert not evaluation & training


def test_cloze_format_changes_every_multiple_choice_set_and_keeps_the_draw(mmlu):
    import json
    from dataclasses import astuple

    from fedmkt.data.questions import set_hash

    def split(choice_format: str):
        config = parse_config({"seed": 3, "clients": [{"name": "a", "domains": ["stem"]}],
                               "data": {"public_size": 6, "private_size": 5, "eval_size": 4, "eval_domains": ["other"],
                                        "choice_format": choice_format}})
        return federated_split(config, presets=mmlu)

    lettered, cloze = split("letters"), split("cloze")
    for a, b in ((lettered.public, cloze.public), (lettered.private["a"], cloze.private["a"]),
                 (lettered.evaluation["other"], cloze.evaluation["other"])):
        assert [q.uid for q in a] == [q.uid for q in b]  # the same questions, only their form differs
        assert not any(q.cloze for q in a) and all(q.cloze for q in b)
    q = cloze.public[0]
    assert "A. " not in prompt_text(q) and answer_text(q) == f" {q.choices[q.answer]}"
    assert set_hash(cloze.public) != set_hash(lettered.public)  # parties in different formats do not mix
    # A lettered set hashes as it did before questions had a cloze field (runs saved then still resume).
    import hashlib
    old = hashlib.sha256()
    for q in lettered.public:
        old.update(json.dumps(astuple(q)[:-1], ensure_ascii=False).encode() + b"\n")
    assert set_hash(lettered.public) == old.hexdigest()[:16]
