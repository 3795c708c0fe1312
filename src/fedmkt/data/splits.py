"""Federated split: public set, one private set per client (its domains), held-out evaluation sets.

A domain is an MMLU subject group or a BIG-bench task; a split can mix both.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from fedmkt.data.questions import Question


@dataclass
class FederatedSplit:
    public: list[Question]
    private: dict[str, list[Question]]
    evaluation: dict[str, list[Question]]  # domain -> questions


def split_questions(
    questions: list[Question],
    client_domains: dict[str, list[str]],
    public_size: int,
    private_size: int,
    eval_size: int,
    eval_domains: list[str],
    seed: int,
) -> FederatedSplit:
    """Disjoint sets. The public set mixes all loaded domains; private sets hold the client's own."""
    known = sorted({q.domain for q in questions})
    for where, domains in [("eval_domains", eval_domains), *client_domains.items()]:
        unknown = set(domains) - set(known)
        if unknown:
            raise ValueError(f"unknown domain(s) {sorted(unknown)} in {where}; loaded: {known}")
    rng = random.Random(seed)
    by_domain: dict[str, list[Question]] = {d: [] for d in known}
    for q in questions:
        by_domain[q.domain].append(q)
    for pool in by_domain.values():
        rng.shuffle(pool)

    def take(domain: str, n: int, what: str) -> list[Question]:
        pool = by_domain[domain]
        if len(pool) < n:
            raise ValueError(f"not enough '{domain}' questions left for {what}: need {n}, have {len(pool)}")
        taken, by_domain[domain] = pool[:n], pool[n:]
        return taken

    evaluation = {d: take(d, eval_size, f"evaluation of {d}") for d in eval_domains}
    # Public: round-robin over all domains so every party sees every kind of question.
    public: list[Question] = []
    order = known
    while len(public) < public_size:
        public.extend(take(order[len(public) % len(order)], 1, "the public set"))
    private = {}
    for name, domains in client_domains.items():
        share = [private_size // len(domains) + (i < private_size % len(domains)) for i in range(len(domains))]
        private[name] = [q for d, n in zip(domains, share) for q in take(d, n, f"client {name}")]
        rng.shuffle(private[name])
    return FederatedSplit(public=public, private=private, evaluation=evaluation)
