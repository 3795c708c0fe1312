"""What a client's released knowledge reveals of its private rows: membership inference with and without DP-SGD.

One client (the packaged SmolLM2) fine-tunes on 500 private rows of the default run's task for several
epochs (a stress setting: more epochs than a run gives, so that whatever leaks shows). Members are those
rows; non-members are 500 held-out rows of the same distribution. Two attacks score each row (lower =
member): its loss under the target (loss threshold), and its loss minus the zero-shot model's loss on it
(reference-calibrated, the offline form of LiRA: the base model is public, so any attacker has it).

Two targets:
  (a) the client's adapter after private training (what FedAvg sends; the attacker runs it on any text);
  (b) the malicious-server oracle: the server makes the candidates its "public" set and reads the client's
      cross-entropies from the knowledge packet the client sends (pinning off). A pinned client refuses
      that public set (tests/test_public_pin.py), which leaves the server nothing to read.

Per setting (no DP, target epsilon 8, 4, 1): AUC and TPR at 1% FPR with 95% bootstrap intervals (members
and non-members resampled apart), and held-out accuracy beside zero-shot's with its paired interval.

    PYTHONPATH=. python -m benchmarks.bench_privacy            # ~30 min on a 2-core CPU
    PYTHONPATH=. python -m benchmarks.bench_privacy --rows 64 --epochs 1 --settings none,4   # a quick look
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.common import record, timed

TASK = "vader/product_reviews"  # the results of 2026-12-04/05 were measured on multiemo/hotels_sentence_en,
# whose BIG-bench sdist PyPI no longer serves: rerun every setting on this task to extend the table
RESAMPLES = 1000


def auc(members: np.ndarray, others: np.ndarray) -> float:
    """P(a member scores below a non-member), ties half (Mann-Whitney)."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([-members, -others]))  # high rank: low score (member-like)
    n, m = len(members), len(others)
    return float((ranks[:n].sum() - n * (n + 1) / 2) / (n * m))


def tpr_at(members: np.ndarray, others: np.ndarray, fpr: float = 0.01) -> float:
    """Share of members caught with a threshold that flags at most `fpr` of the non-members."""
    allowed = int(np.floor(fpr * len(others)))
    ordered = np.sort(others)
    threshold = ordered[allowed] if allowed < len(ordered) else np.inf  # flag scores strictly below it
    return float(np.mean(members < threshold))


def with_interval(metric, members: np.ndarray, others: np.ndarray, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    draws = [metric(rng.choice(members, len(members)), rng.choice(others, len(others))) for _ in range(RESAMPLES)]
    return {"value": round(metric(members, others), 4),
            "interval": [round(float(np.percentile(draws, 2.5)), 4), round(float(np.percentile(draws, 97.5)), 4)]}


def losses(party, rows) -> np.ndarray:
    """Each row's mean cross-entropy on its answer tokens under the party's current adapter."""
    import torch

    from fedmkt.data.encoding import batches
    from fedmkt.privacy import row_losses

    model = party.active
    model.eval()
    out = []
    with torch.no_grad():
        for _, batch in batches(rows, party.train_spec.batch_size, party.pad_id):
            out.extend(row_losses(model, batch.to(party.device)).tolist())
    return np.array(out)


def oracle_losses(party, candidates) -> np.ndarray:
    """Target (b): the cross-entropies a server reads from the packet the client sends on a public set made of
    the candidates (through the wire format, as the server decodes it)."""
    from fedmkt.knowledge import KnowledgePacket

    kept = party.public, party.public_by_uid
    party.public, party.public_by_uid = candidates, {e.uid: e for e in candidates}
    party.adopt_knowledge(None)
    try:
        sent = party.share_knowledge().to_bytes(party.fedmkt.logprob_bits)
    finally:
        party.public, party.public_by_uid = kept
        party.adopt_knowledge(None)
    received = KnowledgePacket.from_bytes(sent)
    order = {uid: i for i, uid in enumerate(received.example_ids.tolist())}
    return np.array([received.ce[order[e.uid]] for e in candidates], dtype=np.float64)


def attack_rows(setting: str, target: str, scores: np.ndarray, reference: np.ndarray, n: int) -> list[dict]:
    rows = []
    for attack, values in (("loss", scores), ("calibrated", scores - reference)):
        members, others = values[:n], values[n:]
        rows.append({"benchmark": "privacy", "setting": setting, "target": target, "attack": attack,
                     "auc": with_interval(auc, members, others), "tpr_at_1pct_fpr": with_interval(tpr_at, members, others)})
    return rows


def run(rows: int, epochs: int, settings: list[str], eval_size: int, seed: int = 0) -> list[dict]:
    from fedmkt.config import PrivacySpec, parse_config
    from fedmkt.federation.setup import federated_split, load_questions, make_client
    from fedmkt.privacy import PrivacyBudget
    from fedmkt.stats import paired_difference

    config = parse_config({
        "seed": seed, "clients": [{"name": "target", "domains": [TASK]}],
        "data": {"public_domains": [TASK], "public_size": 1, "private_size": rows,
                 "eval_size": rows + eval_size, "eval_domains": [TASK], "choice_format": "cloze"},
        "train": {"batch_size": 8}, "fedmkt": {"private_epochs": epochs, "rounds": 1}})
    split = federated_split(config, load_questions(config))
    party = make_client(config, "target", split, None).party
    held_out = split.evaluation[TASK]
    from fedmkt.data.encoding import encode_questions

    outsiders = encode_questions(party.tokenizer, held_out[:rows], party.train_spec.max_length, party.system_prompt)
    candidates = party.private + outsiders  # members first, then non-members
    accuracy_set = held_out[rows:rows + eval_size]
    initial = party.adapter_state()
    reference, zero_s = timed(losses, party, candidates)
    zero_shot = party.evaluate(accuracy_set)["per_question"]
    out = [{"benchmark": "privacy", "setting": "zero-shot", "task": TASK, "accuracy": round(float(np.mean(zero_shot)), 4),
            "members": rows, "non_members": rows, "accuracy_questions": len(accuracy_set), "epochs": epochs,
            "score_s": round(zero_s, 1)}]
    print(out[-1], flush=True)
    for setting in settings:
        party.load_adapter_state(initial)
        party.progress.train_calls = 0  # every setting trains from the same start with the same shuffles
        party.privacy = None if setting == "none" else PrivacyBudget(
            PrivacySpec(target_epsilon=float(setting)), rows, expected_batch=party.train_spec.batch_size,
            epochs_per_call=epochs, calls=1)
        _, trained_s = timed(party.train_private)
        adapter = losses(party, candidates)
        oracle = oracle_losses(party, candidates)
        scores = party.evaluate(accuracy_set)["per_question"]
        change = paired_difference(zero_shot, scores)
        label = "no DP" if setting == "none" else f"epsilon {setting}"
        row = {"benchmark": "privacy", "setting": label, "accuracy": round(float(np.mean(scores)), 4),
               "vs_zero_shot": round(change.difference, 4), "interval": [round(change.low, 4), round(change.high, 4)],
               "train_s": round(trained_s, 1),
               "oracle_equals_adapter_loss": bool(np.allclose(oracle, adapter, rtol=1e-3, atol=1e-4))}
        if party.privacy is not None:
            row.update({"epsilon": round(party.privacy.epsilon(), 3), "delta": party.privacy.delta,
                        "noise_multiplier": round(party.privacy.noise_multiplier, 4),
                        "steps": party.privacy.steps})
        out.append(row)
        print(row, flush=True)
        for target, values in (("adapter", adapter), ("server oracle", oracle)):
            out += attack_rows(label, target, values, reference, rows)
            for r in out[-2:]:
                print(r, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500, help="members (private rows); as many non-members")
    parser.add_argument("--epochs", type=int, default=4, help="private epochs (the stress setting)")
    parser.add_argument("--settings", default="none,8,4,1", help="none and target epsilons, comma-separated")
    parser.add_argument("--eval-size", type=int, default=200, help="held-out questions scored for accuracy")
    parser.add_argument("--name", default="privacy", help="results file (benchmarks/results/<name>.json)")
    args = parser.parse_args()
    record(args.name, run(args.rows, args.epochs, args.settings.split(","), args.eval_size))


if __name__ == "__main__":
    main()
