"""The federated split: evaluation sets, the public set, and each client's own evaluation and private sets.

Every party computes the same shared part (server-side evaluation sets and the public set) from the
config alone; a client adds its own sets, which nobody else needs to read. Draws never overlap: a
question taken by one set is gone for the sets drawn after it, in this order: server evaluation sets,
the public set, then per client (config order) its evaluation set and its private set.

Each domain is one queue of questions, shuffled once with the run's seed: the domains of the shared
sources in sorted order with one generator (as the benchmark split always did), any other domain with
a generator of its own name, so that what one client adds changes nothing of what another draws. A draw
takes round-robin over its domains, skipping empty ones, so a set mixes its domains evenly.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field, replace

from fedmkt.config import RunConfig, SetSpec, SourceSpec
from fedmkt.data.mmlu import DOMAINS as MMLU_DOMAINS
from fedmkt.data.partition import partition
from fedmkt.data.questions import Question
from fedmkt.data.openai_evals import DOMAINS as OPENAI_EVALS_DOMAINS
from fedmkt.data.vader import DOMAINS as VADER_DOMAINS
from fedmkt.data.sources import DataError, describe_source, is_preset, load_source


@dataclass
class FederatedSplit:
    public: list[Question]
    private: dict[str, list[Question]]  # client -> its private set (only the clients this party may read)
    evaluation: dict[str, list[Question]]  # server-side evaluation sets by name
    client_eval: dict[str, list[Question]] = field(default_factory=dict)  # client -> its own held-out set

    def as_cloze(self) -> "FederatedSplit":
        """Every multiple-choice question answered by its choice's text instead of a letter."""
        def cloze(questions: list[Question]) -> list[Question]:
            return [replace(q, cloze=True) if q.choices else q for q in questions]
        return FederatedSplit(public=cloze(self.public), private={k: cloze(v) for k, v in self.private.items()},
                              evaluation={k: cloze(v) for k, v in self.evaluation.items()},
                              client_eval={k: cloze(v) for k, v in self.client_eval.items()})


class Pool:
    """The questions not drawn yet, one shuffled queue per domain."""

    def __init__(self, seed: int):
        self.seed = seed
        self.queues: dict[str, deque[Question]] = {}
        self.seen: set[int] = set()

    def add(self, questions: list[Question], shared: bool) -> None:
        fresh: dict[str, list[Question]] = {}
        for q in questions:
            if q.uid not in self.seen:  # the same example from two sources is one example
                self.seen.add(q.uid)
                fresh.setdefault(q.domain, []).append(q)
        rng = random.Random(self.seed)
        for domain in sorted(fresh):
            if not shared:
                rng = random.Random(f"{self.seed}:{domain}")
            rng.shuffle(fresh[domain])
            self.queues.setdefault(domain, deque()).extend(fresh[domain])

    def draw(self, domains: list[str], size: int | None, what: str, sources: str) -> list[Question]:
        queues = [self.queues.get(d, deque()) for d in domains]
        left = sum(len(q) for q in queues)
        if size is not None and size > left:
            raise DataError(f"{what}: asked for {size} examples, but {sources} hold only {left} not drawn by an "
                            f"earlier set")
        want = left if size is None else size
        if want == 0:
            raise DataError(f"{what}: {sources} hold no examples that an earlier set has not drawn")
        taken: list[Question] = []
        turn = 0
        while len(taken) < want:
            queue = queues[turn % len(queues)]
            if queue:
                taken.append(queue.popleft())
            turn += 1
        return taken


# -- the sets a config asks for (own data, or the benchmark shorthand) -------------------------------------

def _preset_for(domain: str, tasks: list[str], where: str) -> SourceSpec:
    if domain in MMLU_DOMAINS:
        return SourceSpec(source="mmlu", domains=[domain])
    if domain in VADER_DOMAINS:
        return SourceSpec(source="vader", domains=[domain])
    if domain in OPENAI_EVALS_DOMAINS:
        return SourceSpec(source="openai_evals", domains=[domain])
    if domain in tasks:
        return SourceSpec(source="bigbench", domains=[domain])
    raise DataError(f"unknown domain(s) ['{domain}'] in {where}; known: {sorted(MMLU_DOMAINS)}, {list(VADER_DOMAINS)}, "
                    f"{list(OPENAI_EVALS_DOMAINS)} "
                    f"and data.bigbench_tasks {tasks}")


def public_set(config: RunConfig) -> SetSpec:
    data = config.data
    if data.public is not None:
        return data.public
    if data.public_domains:
        return SetSpec(sources=[_preset_for(d, data.bigbench_tasks, "data.public_domains") for d in data.public_domains],
                       size=data.public_size)
    sources = [SourceSpec(source="mmlu")]
    if data.bigbench_tasks:
        sources.append(SourceSpec(source="bigbench", domains=list(data.bigbench_tasks)))
    return SetSpec(sources=sources, size=data.public_size)


def evaluation_sets(config: RunConfig) -> dict[str, SetSpec]:
    data = config.data
    if data.evaluation is not None:
        return data.evaluation
    return {d: SetSpec(sources=[_preset_for(d, data.bigbench_tasks, "eval_domains")], size=data.eval_size)
            for d in data.eval_domains}


def private_set(config: RunConfig, name: str) -> SetSpec | None:
    client = next(c for c in config.clients if c.name == name)
    if client.private is not None or client.domains is None:
        return client.private
    return SetSpec(sources=[_preset_for(d, config.data.bigbench_tasks, f"clients.{name}.domains") for d in client.domains],
                   size=config.data.private_size)


def _load(spec: SetSpec, presets: list[Question] | None) -> tuple[list[Question], list[str]]:
    """A set's candidate questions and the domains its draw goes round over."""
    questions = [q for source in spec.sources for q in load_source(source, presets)]
    if all(source.domains for source in spec.sources):
        domains = list(dict.fromkeys(d for source in spec.sources for d in source.domains))
    else:
        domains = sorted({q.domain for q in questions})
    return questions, domains


def _sources(spec: SetSpec) -> str:
    return ", ".join(describe_source(s) for s in spec.sources)


def _shuffled(questions: list[Question], seed: int, name: str) -> list[Question]:
    questions = list(questions)
    random.Random(f"{seed}:{name}").shuffle(questions)
    return questions


def _partitioned(config: RunConfig, pool: Pool, presets: list[Question] | None,
                 readable: list[str]) -> list[list[Question]] | None:
    """private_partition's parts, drawn after the shared sets; by a party that reads some client's private data,
    or by every party where the set is all presets (so later preset draws stay the same everywhere)."""
    spec = config.private_partition
    if spec is None or not (readable or all(is_preset(s) for s in spec.data.sources)):
        return None
    questions, domains = _load(spec.data, presets)
    pool.add(questions, shared=False)
    drawn = pool.draw(domains, spec.data.size, "private_partition.data", _sources(spec.data))
    return partition(drawn, spec, sum(c.part is not None for c in config.clients), config.seed)


def federated_split(config: RunConfig, clients: list[str] | None = None,
                    presets: list[Question] | None = None) -> FederatedSplit:
    """The split as seen by a party that may read the private data of `clients` (None: every client, as in a
    local run; [] on a Flower server; [name] on that client's node). Other clients' preset-drawn sets are
    drawn too (presets are public benchmarks) so that draws stay disjoint; their files are never opened."""
    readable = [c.name for c in config.clients] if clients is None else list(clients)
    pool = Pool(config.seed)
    evaluation_specs, public_spec = evaluation_sets(config), public_set(config)
    loaded = {name: _load(spec, presets) for name, spec in evaluation_specs.items()}
    public_questions, public_domains = _load(public_spec, presets)
    pool.add(public_questions + [q for qs, _ in loaded.values() for q in qs], shared=True)
    evaluation = {name: pool.draw(domains, evaluation_specs[name].size, f"data.evaluation.{name}",
                                  _sources(evaluation_specs[name]))
                  for name, (_, domains) in loaded.items()}
    public = pool.draw(public_domains, public_spec.size, "data.public", _sources(public_spec))
    private: dict[str, list[Question]] = {}
    client_eval: dict[str, list[Question]] = {}
    parts = _partitioned(config, pool, presets, readable)
    for index, client in enumerate(config.clients):
        own = client.name in readable
        if own and client.part is not None and parts is not None:
            private[client.name] = _shuffled(parts[client.part], config.seed, client.name)
        for kind, spec in (("eval", client.eval), ("private", private_set(config, client.name))):
            if spec is None or not (own or all(is_preset(s) for s in spec.sources)):
                continue
            questions, domains = _load(spec, presets)
            pool.add(questions, shared=False)
            drawn = pool.draw(domains, spec.size, f"clients.{index}.{kind} ({client.name})", _sources(spec))
            if not own:
                continue  # drawn only so that later draws skip it
            if kind == "private":
                private[client.name] = _shuffled(drawn, config.seed, client.name)
            else:
                client_eval[client.name] = drawn
    split = FederatedSplit(public=public, private=private, evaluation=evaluation, client_eval=client_eval)
    return split.as_cloze() if config.data.choice_format == "cloze" else split
