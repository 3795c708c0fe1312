"""Do trained parties' answers end? Two run folders of the same config side by side (say, one trained
without an end-of-turn target and one with it): for each party and free-text evaluation set, the share of
greedy answers that stop (end of turn or EOS) before max_new_tokens, and ROUGE-L with the paired 95%
interval of the difference, on the same held-out questions, generated here in one process by the same code.

    PYTHONPATH=. python -m benchmarks.answer_ends RUN_BEFORE RUN_AFTER [--max-new-tokens 48] [--round N]

Each party answers with its adapter after its run's last round (or round N in both). Zero-shot's share is
in the second run's metrics.json (round 0's `ended`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.common import record


def answers_of(run_dir: Path, party: str, round_no: int | None, max_new_tokens: int) -> dict[str, tuple]:
    """{set name: (ended flags, ROUGE-L per question)} for one party's free-text evaluation sets."""
    from fedmkt.evaluation import generate_with_ends, rouge_l
    from fedmkt.export import load_party, run_config, saved_party
    from fedmkt.federation.setup import federated_split

    saved = saved_party(run_dir, party, round_no)
    loaded = load_party(saved)
    config = run_config(run_dir)
    split = federated_split(config, clients=[] if party == "server" else [party])
    sets = dict(split.evaluation)
    if party != "server" and party in split.client_eval:
        sets["own"] = split.client_eval[party]
    out = {}
    for name, questions in sets.items():
        if not questions or not questions[0].free_text:
            continue
        answers, ended = generate_with_ends(loaded.model, loaded.tokenizer, questions, saved.max_length, 4,
                                            max_new_tokens, system=saved.system_prompt)
        out[name] = (ended, [max(rouge_l(a, r) for r in q.references) for a, q in zip(answers, questions)])
    return out


def compare(before: Path, after: Path, max_new_tokens: int, round_no: int | None = None,
            parties: list[str] | None = None) -> list[dict]:
    import numpy as np

    from fedmkt.export import run_config
    from fedmkt.stats import paired_difference

    config = run_config(after)
    rows = []
    for party in parties or ["server", *(c.name for c in config.clients)]:
        stages = {"before": answers_of(before, party, round_no, max_new_tokens),
                  "after": answers_of(after, party, round_no, max_new_tokens)}
        for name in stages["after"]:
            ended = {k: float(np.mean(v[name][0])) for k, v in stages.items()}
            rouge = {k: float(np.mean(v[name][1])) for k, v in stages.items()}
            diff = paired_difference(stages["before"][name][1], stages["after"][name][1])
            rows.append({"benchmark": "answer_ends", "run": config.run_name, "round": round_no or "last",
                         "party": party, "set": name,
                         "questions": len(stages["after"][name][0]), "max_new_tokens": max_new_tokens,
                         **{f"ended_{k}": round(v, 3) for k, v in ended.items()},
                         **{f"rougeL_{k}": round(v, 3) for k, v in rouge.items()},
                         "rougeL_after_minus_before": round(diff.difference, 3),
                         "interval": [round(diff.low, 3), round(diff.high, 3)]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--round", type=int, default=None, help="both runs' adapters after this round")
    parser.add_argument("--parties", default=None, help="comma-separated (default: every party)")
    args = parser.parse_args()
    rows = compare(args.before, args.after, args.max_new_tokens, args.round,
                   args.parties.split(",") if args.parties else None)
    record(f"answer_ends_{rows[0]['run'] if rows else 'none'}", rows)


if __name__ == "__main__":
    main()
