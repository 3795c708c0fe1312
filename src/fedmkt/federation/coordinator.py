"""The server's side of a run, over any transport: the one round loop every method shares.

Algorithm 1's outer loop: zero-shot evaluation (round 0), then per round the method's training
(`fedmkt.federation.methods`), evaluation of the parties the method trains, and a checkpoint. A
client that fails a phase is dropped from the rest of that round and the round completes with the
others; the run records who was dropped and why. After every round the run folder holds the
round's adapters, metrics and a checkpoint (`RunStore`), so `resume` continues after a crash with
nothing lost. The local runner and the Flower ServerApp both drive this class.
"""

from __future__ import annotations

import json
import time

from fedmkt.config import RunConfig
from fedmkt.data.splits import FederatedSplit
from fedmkt.evaluation import majority_class, mean_kinds, summarize
from fedmkt.stats import KINDS
from fedmkt.federation.methods import (RoundContext, RoundFailed, Transport, call_clients, method_for,
                                      record_drop)
from fedmkt.federation.protocol import OWN, ClientFailure, EvaluateReply, Phase, Request
from fedmkt.federation.roles import Party
from fedmkt.federation.store import RunStore, take_answers, write_answers
from fedmkt.models import peer_tokenizer
from fedmkt.progress import SILENT, Reporter
from fedmkt.sampling import sampled_clients
from fedmkt.records import Evaluation, RoundRecord, RunMetrics, SplitSizes


class Coordinator:
    def __init__(self, config: RunConfig, server: Party, split: FederatedSplit, transport: Transport, store: RunStore,
                 reporter: Reporter = SILENT, clients_known: bool = False):
        """clients_known: every client runs the model and data the config names (a local run); on Flower a
        node may run a model or data of its own, so none is assumed to score like another."""
        self.config, self.server, self.split, self.transport = config, server, split, transport
        self.clients_known = clients_known
        self.store, self.reporter = store, reporter
        self.method = method_for(config, server, split)
        self.clients = [c.name for c in config.clients]
        self.metrics: RunMetrics | None = None
        # The last round's training and evaluation times, apart: the estimates for what is left (a round's
        # evaluation may be skipped, and round 1's would be misread with zero-shot's in it).
        self.last_train_s: float | None = None
        self.last_eval_s: float | None = None

    def prepare(self) -> None:
        """Step (3) ahead of round 1 on the server: a vocabulary map and alignments per client tokenizer."""
        for client in self.config.clients:
            self.server.sender_alignment(peer_tokenizer(client.model.source))

    # -- evaluation ------------------------------------------------------------------------------
    def evaluate(self, round_no: int, parties: set[str] | None = None, dropped: dict[str, str] | None = None) -> Evaluation:
        """Scores of the parties a method trains (every party at round 0), on every evaluation set. A client
        whose reply scores other sets, or other numbers of questions, than asked is dropped (into `dropped`)."""
        server = self.method.trains_server if round_no else True
        clients = self.method.trained_clients if round_no else self.clients
        if parties is not None:
            server, clients = server and "server" in parties, [c for c in clients if c in parties]
        out: Evaluation = {}
        if server:
            out["server"] = self._scores(round_no, "server",
                                         {d: self.server.evaluate(qs) for d, qs in self.split.evaluation.items()})
        dropped = {} if dropped is None else dropped
        replies = call_clients(self.transport, Phase.EVALUATE, {n: Request(round_no) for n in clients}, dropped,
                               self.reporter, self.server.public_hash)
        for name in clients:
            reply = replies.get(name)
            if isinstance(reply, EvaluateReply):
                scores = dict(reply.scores)
                own = scores.pop(OWN, None)
                try:
                    self._check_answered(scores)
                except ClientFailure as failure:
                    record_drop(dropped, self.reporter, name, Phase.EVALUATE, str(failure))
                    continue
                out[name] = self._scores(round_no, name, scores, own)
        return out

    def _check_answered(self, scores: dict[str, dict]) -> None:
        """An evaluation reply must score every set asked, and each on all of its questions."""
        asked = self.split.evaluation
        if set(scores) != set(asked):
            raise ClientFailure(f"it scored sets {sorted(scores)[:8]}, the server asked for {sorted(asked)}")
        for domain, result in scores.items():
            if result["n"] != len(asked[domain]):
                raise ClientFailure(f"eval.{domain}: it scored {result['n']} questions, the set has {len(asked[domain])}")

    def _scores(self, round_no: int, party: str, results: dict[str, dict], own: dict | None = None):
        """A party's summarized scores; its generated answers go to the run folder's answers/, not metrics.json."""
        write_answers(self.store.root, round_no, party, take_answers(results, self.split.evaluation))
        return summarize(results, own)

    def _zero_shot_keys(self) -> dict[str, str]:
        """What fixes a zero-shot score: the model, the evaluation questions and how they are scored (a fresh
        LoRA adapter changes nothing: its B matrices start at zero)."""
        config = self.config
        specs = {"server": config.server, **{c.name: c.model for c in config.clients}}
        questions = {d: [q.uid for q in qs] for d, qs in self.split.evaluation.items()}
        common = [questions, config.data.eval_scoring, config.train.max_length]
        if config.data.choice_format != "letters":  # (lettered keys stay as they were before the choice)
            common.append(config.data.choice_format)
        own = {c.name: [q.uid for q in self.split.client_eval.get(c.name, [])] for c in config.clients}
        return {name: json.dumps([spec.model_dump(exclude={"device"}), *common] + ([own[name]] if own.get(name) else []),
                                 sort_keys=True)
                for name, spec in specs.items()}

    def zero_shot(self) -> Evaluation:
        """Round-0 evaluation. Parties of the same model, questions and scoring have the same zero-shot score
        (a fresh adapter changes nothing), so where the clients are known each is computed once: once per run
        (clients of one model), and once per grid with the grid's cache."""
        if not self.clients_known:
            return self.evaluate(0)
        cached = self.store.zero_shot_cache is not None
        cache = self.store.cached_zero_shot() if cached else {}
        keys = self._zero_shot_keys()
        first_of: dict[str, str] = {}
        for name, key in keys.items():
            if key not in cache:
                first_of.setdefault(key, name)
        fresh = self.evaluate(0, parties=set(first_of.values())) if first_of else {}
        for key, name in first_of.items():
            if name in fresh:
                cache[key] = fresh[name]
        if cached:
            self.store.save_zero_shot(cache)
        return {name: cache[keys[name]] for name in ["server", *self.clients] if keys[name] in cache}

    # -- rounds ----------------------------------------------------------------------------------
    def run_round(self, round_no: int) -> RoundRecord:
        """One round of the method's training (evaluation comes after, outside its timing)."""
        server_before = self.server.clock.seconds
        self.server.progress.round = round_no
        spec = self.config.fedmkt
        sampled = sampled_clients(self.clients, spec.clients_per_round, self.config.seed, round_no)
        rnd = RoundContext(round_no, self.transport, self.reporter, self.method.new_record(round_no),
                           self.server.public_hash, clients=sampled, min_clients=spec.min_clients)
        if spec.clients_per_round is not None:
            rnd.record.sampled = sampled
            self.reporter.message(f"round {round_no} asks {len(sampled)} of {len(self.clients)} clients: "
                                  f"{', '.join(sampled)}")
        rnd.expected_s = self.last_train_s
        rnd.after_s = self._time_after(round_no) or 0.0
        self.method.train_round(rnd)
        rnd.record.timing = rnd.timing(self.server.clock.seconds - server_before)
        return rnd.record

    def _evaluates(self, round_no: int) -> bool:
        return round_no % self.config.fedmkt.evaluate_every == 0 or round_no == self.config.fedmkt.rounds

    def _time_after(self, round_no: int) -> float | None:
        """Estimated seconds of the run after round `round_no`'s training: the later rounds' training and
        every evaluation still to come (this round's included); None before a round has been timed."""
        if self.last_train_s is None:
            return None
        rounds = range(round_no + 1, self.config.fedmkt.rounds + 1)
        evaluations = sum(self._evaluates(r) for r in range(round_no, self.config.fedmkt.rounds + 1))
        return len(rounds) * self.last_train_s + evaluations * (self.last_eval_s or 0.0)

    def _restore(self) -> int:
        """The round to go on after, from the checkpoint; every file is read before anything is changed."""
        checkpoint = self.store.load_checkpoint()
        if checkpoint is None:  # killed in round 1 (or in start-up): its steps so far are repeated from the start
            self.store.drop_steps_after(0)
            return 0
        metrics = self.store.read_metrics()
        self.server.progress.train_calls = checkpoint.server_train_calls  # the shuffles go on as if never stopped
        self.server.load_adapter_state(checkpoint.server_adapter)
        self.metrics = metrics
        self.metrics.rounds = [r for r in self.metrics.rounds if r.round <= checkpoint.completed_round]
        self.store.drop_steps_after(checkpoint.completed_round)
        return checkpoint.completed_round

    def run(self, resume: bool = False) -> RunMetrics:
        """Algorithm 1: zero-shot, then every round not yet completed; returns the run's metrics."""
        config = self.config
        self.reporter.message(f"public set: {len(self.split.public)} examples, sha256 {self.server.public_sha256} "
                              f"(what a client pins with public_sha256 / public-set-sha256)")
        self.prepare()
        completed = self._restore() if resume else 0
        earlier = self.metrics.wall_s if self.metrics is not None and self.metrics.wall_s else 0.0
        started = time.perf_counter() - earlier  # a resumed run's wall time goes on from where it stopped
        if completed == 0:
            self.store.write_config(config)
            split = SplitSizes(public=len(self.split.public),
                               private={k: len(v) for k, v in self.split.private.items()},
                               evaluation={k: len(v) for k, v in self.split.evaluation.items()})
            self.metrics = RunMetrics(config=json.loads(config.model_dump_json()), split=split,
                                      question_ids={d: [q.uid for q in qs] for d, qs in self.split.evaluation.items()},
                                      majority=majority_class(self.split.public, self.split.evaluation))
            self.metrics.zero_shot = self.zero_shot()
            self._report("zero-shot", self.metrics.zero_shot)
            self.store.write_metrics(self.metrics)
        else:
            self.metrics.stopped = None  # a stop (too few clients) is what a resume repeats
            self.reporter.message(f"resuming after round {completed}")
        for round_no in range(completed + 1, config.fedmkt.rounds + 1):
            self.reporter.message(f"round {round_no}/{config.fedmkt.rounds}", "heading")
            round_started = time.perf_counter()
            try:
                record = self.run_round(round_no)
            except RoundFailed as failure:  # recorded, then the run stops: a resume repeats this round
                self.metrics.stopped = str(failure)
                self.metrics.wall_s = time.perf_counter() - started
                self.store.write_metrics(self.metrics)
                raise
            self.last_train_s = time.perf_counter() - round_started
            if self._evaluates(round_no):
                evaluation_started = time.perf_counter()
                record.evaluation = self.evaluate(round_no, dropped=record.dropped)
                self.last_eval_s = time.perf_counter() - evaluation_started
            took = time.perf_counter() - round_started
            parts = f"training {self.last_train_s:.0f}s" + (f", evaluation {took - self.last_train_s:.0f}s"
                                                            if record.evaluation else ", no evaluation")
            left = config.fedmkt.rounds - round_no
            self.reporter.message(f"round {round_no} took {took:.0f}s ({parts})"
                                  + (f"; about {self._time_after(round_no + 1) + self.last_train_s:.0f}s left in "
                                     f"the run ({left} rounds)" if left else ""))
            if record.evaluation:
                self._report(f"after round {round_no}", record.evaluation)
            self.server.save_adapter(self.store.adapter_dir(round_no, "server"))
            self.metrics.rounds.append(record)
            self.metrics.wall_s = time.perf_counter() - started
            self.store.write_metrics(self.metrics)
            self.store.save_checkpoint(round_no, self.server.adapter_state(), self.server.progress.train_calls)
        self.reporter.message(f"done in {self.metrics.wall_s or 0:.0f}s: {self.store.root}", "success")
        return self.metrics

    def _report(self, title: str, evaluation: Evaluation) -> None:
        # Each kind of result (accuracy, ROUGE-L) apart: a mean over both would be no figure at all.
        cells = "  ".join(f"{name}=" + "/".join(f"{scores.mean[m]:.3f}" for m in mean_kinds(scores.domains))
                          for name, scores in evaluation.items())
        kinds = mean_kinds(next(iter(evaluation.values())).domains) if evaluation else []
        self.reporter.message(f"{title} {' / '.join(KINDS[m] for m in kinds)}: {cells}")
