"""Differential privacy for a client's private fine-tuning (step 1): DP-SGD with Opacus, and its budget.

DP-SGD (Abadi et al., 2016): each optimizer step trains on a Poisson sample of the private rows (each row
in with probability q), clips every row's gradient of the LoRA parameters to norm C, adds Gaussian noise
of standard deviation sigma·C to their sum and divides by the expected batch size. Opacus computes the
per-row gradients (GradSampleModule hooks on the LoRA layers), clips and noises them (DPOptimizer over
the usual AdamW) and accounts the privacy spent (RDP or PRV accountant). Everything a client releases
afterwards (knowledge packets, cross-entropies, FedAvg adapters, what distillation on public data makes
of the adapter) is post-processing of the DP-trained adapter, so the protocol is (epsilon, delta)-DP per
client with respect to its private rows; docs/privacy.md gives the argument and what breaks it.

A row's loss here is its own mean cross-entropy over its answer tokens (clipping is per row: the unit
protected is a private example), where non-private training averages over all tokens of a batch.
"""

from __future__ import annotations

import math
import time
import warnings
from contextlib import contextmanager
from typing import Callable

import numpy as np
import torch

from fedmkt.config import PrivacySpec, TrainSpec
from fedmkt.data.encoding import Encoded, batches
from fedmkt.progress import Reporter
from fedmkt.training import ComputeClock, adamw, mixed_precision, scheduler_for, seeded, tail_logits


@contextmanager
def _quiet():
    """Opacus' notes that are no fault here: the RDP bound found at the largest order (still a valid, if looser,
    bound), and torch's note that backward hooks see no input gradients (the frozen base's inputs need none)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        yield


class PrivacyError(ValueError):
    """A privacy setting that cannot be met (a budget too small for one step, no private rows)."""


class PrivacyBudget:
    """One client's DP-SGD settings resolved against its data, and the accountant of what it has spent.

    sample rate q = expected batch / N rows; steps per epoch round(1/q) (Opacus' Poisson loader's count);
    the noise multiplier, where `auto`, is the smallest that keeps the planned steps (every round's private
    epochs) within the target epsilon. The accountant's history is this object's whole state: a client keeps it
    in its store (ClientRuntime), and it never rolls back with the adapter."""

    def __init__(self, spec: PrivacySpec, rows: int, expected_batch: int, epochs_per_call: int, calls: int):
        if rows < 1:
            raise PrivacyError("privacy: DP-SGD needs private rows to protect; this client has none")
        from opacus.accountants import create_accountant
        from opacus.accountants.utils import get_noise_multiplier

        self.spec = spec
        self.rows = rows
        self.expected_batch = min(expected_batch, rows)
        self.sample_rate = self.expected_batch / rows
        self.steps_per_epoch = max(1, round(1 / self.sample_rate))
        self.steps_per_call = self.steps_per_epoch * epochs_per_call
        self.planned_steps = self.steps_per_call * calls
        self.delta = spec.delta if spec.delta is not None else 1.0 / (10 * rows)  # below 1/N: no row given away
        if spec.noise_multiplier == "auto":
            try:
                with _quiet():
                    self.noise_multiplier = float(get_noise_multiplier(
                        target_epsilon=spec.target_epsilon, target_delta=self.delta, sample_rate=self.sample_rate,
                        steps=self.planned_steps, accountant=spec.accountant))
            except ValueError as error:
                raise PrivacyError(f"privacy: no noise reaches epsilon {spec.target_epsilon} at delta {self.delta:.3g} "
                                   f"over {self.planned_steps} steps ({error})") from None
        else:
            self.noise_multiplier = float(spec.noise_multiplier)
        self.accountant = create_accountant(mechanism=spec.accountant)

    @property
    def steps(self) -> int:
        return sum(int(count) for _, _, count in self.accountant.history)

    def _epsilon_of(self, history: list) -> float:
        if not any(steps for _, _, steps in history):
            return 0.0
        if any(noise == 0 and steps for noise, _, steps in history):  # a step without noise: no bound at all
            return math.inf
        saved = self.accountant.history
        self.accountant.history = history
        try:
            with _quiet():
                return float(self.accountant.get_epsilon(delta=self.delta))
        finally:
            self.accountant.history = saved

    def epsilon(self) -> float:
        """Epsilon spent so far at this budget's delta."""
        return self._epsilon_of(self.accountant.history)

    def epsilon_after(self, steps: int) -> float:
        """Epsilon spent if `steps` more DP-SGD steps ran."""
        return self._epsilon_of(self.accountant.history + [(self.noise_multiplier, self.sample_rate, steps)])

    def allows(self, steps: int) -> bool:
        """Whether `steps` more steps stay within the target epsilon (always, without a target)."""
        target = self.spec.target_epsilon
        return target is None or self.epsilon_after(steps) <= target * (1 + 1e-9)

    def spend(self, steps: int) -> None:
        for _ in range(steps):  # one accountant step per optimizer step, as Opacus' own hook records them
            self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)

    def state(self) -> list[list]:
        """The accountant's history, JSON-ready: [[noise multiplier, sample rate, steps], ...]."""
        return [[float(s), float(q), int(n)] for s, q, n in self.accountant.history]

    def load_state(self, history: list) -> None:
        entries = [(float(s), float(q), int(n)) for s, q, n in history]
        if not all(math.isfinite(s) and s >= 0 and 0 < q <= 1 and n >= 0 for s, q, n in entries):
            raise ValueError("privacy history entries must be [noise >= 0, rate in (0, 1], steps >= 0]")
        self.accountant.history = entries

    def describe(self) -> str:
        target = "" if self.spec.target_epsilon is None else f" of target {self.spec.target_epsilon:g}"
        return (f"epsilon {self.epsilon():.3f}{target} at delta {self.delta:.3g} ({self.steps} DP-SGD steps, "
                f"noise {self.noise_multiplier:.3f}, q {self.sample_rate:.3g}, C {self.spec.max_grad_norm:g}, "
                f"{self.spec.accountant})")


class PrivateGradients:
    """Per-row gradients through Opacus, clipped, summed and noised into the optimizer's step (DP-SGD).

    `add(losses)` back-propagates a physical batch's per-row losses and clips each row's gradient into the
    running sum; `step()` adds the noise, divides by the expected batch size and steps the wrapped
    optimizer, so a Poisson batch may come in any number of physical batches, or none (an empty draw still
    takes its noisy step, as the accountant assumes)."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, noise_multiplier: float,
                 max_grad_norm: float, expected_batch: int):
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        self.module = GradSampleModule(model, loss_reduction="mean")  # hooks on the trainable (LoRA) layers
        self.optimizer = DPOptimizer(optimizer, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
                                     expected_batch_size=expected_batch, loss_reduction="mean")
        self.params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]

    def add(self, row_losses: torch.Tensor) -> None:
        with _quiet():
            row_losses.mean().backward()  # loss_reduction "mean": Opacus scales each row's gradient back up
        self.optimizer.signal_skip_step(True)  # clip and accumulate only
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        for p in self.params:  # nothing more this step: an empty physical batch closes the Poisson batch
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def close(self) -> torch.nn.Module:
        """Remove Opacus' hooks and attributes: the model trains (and parties sharing its base) as before."""
        return self.module.to_standard_module()


def row_losses(model: torch.nn.Module, batch) -> torch.Tensor:
    """[B] each row's mean cross-entropy over its answer tokens."""
    logits = tail_logits(model, batch).float()
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch.labels, reduction="none")
    mask = batch.loss_mask.float()
    return (nll * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def poisson_batches(n_rows: int, sample_rate: float, steps: int, seed: int) -> list[list[int]]:
    """Each step's rows: every row independently with probability `sample_rate` (the sampling the
    accountant's amplification assumes; a fixed-size shuffle would not match it)."""
    rng = np.random.default_rng(seed)
    return [np.flatnonzero(rng.random(n_rows) < sample_rate).tolist() for _ in range(steps)]


def train_dp_sgd(model: torch.nn.Module, examples: list[Encoded], pad_id: int, spec: TrainSpec,
                 budget: PrivacyBudget, seed: int, clock: ComputeClock, reporter: Reporter, description: str,
                 on_step: Callable[[dict], None] | None = None) -> float:
    """Step (1) under DP-SGD: `budget.steps_per_call` steps on Poisson samples of `examples`, physical batches
    of `spec.batch_size`, AdamW with the run's schedule; the accountant records every step. Returns the mean
    row loss (for the client's own log: it is not private, and is not sent)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = adamw(params, spec)
    schedule = scheduler_for(optimizer, spec, budget.steps_per_call)
    device = next(model.parameters()).device
    autocast, amp_dtype = mixed_precision(spec, device)
    steps = poisson_batches(len(examples), budget.sample_rate, budget.steps_per_call, seed)
    task = reporter.task(description, len(steps))
    private = PrivateGradients(model, optimizer, budget.noise_multiplier, budget.spec.max_grad_norm,
                               budget.expected_batch)
    losses: list[float] = []
    model.train()
    try:
        with seeded(seed, device):  # dropout and the noise depend on this call alone
            for number, rows in enumerate(steps, 1):
                started, tokens, step_losses = time.perf_counter(), 0, []
                for chunk, batch in batches([examples[i] for i in rows], spec.batch_size, pad_id):
                    batch = batch.to(device)
                    with clock.measure():
                        with torch.autocast(device.type, dtype=amp_dtype, enabled=autocast):
                            per_row = row_losses(private.module, batch)
                        private.add(per_row)
                    step_losses.extend(per_row.detach().cpu().tolist())
                    tokens += int(batch.attention_mask.sum())
                learning_rate = schedule.get_last_lr()[0]
                with clock.measure():
                    private.step()
                    schedule.step()
                budget.spend(1)
                losses.extend(step_losses)
                task.advance(1, f"{len(rows)} rows")
                if on_step is not None:
                    on_step({"step": number, "loss": float(np.mean(step_losses)) if step_losses else float("nan"),
                             "learning_rate": float(learning_rate), "rows": len(rows),
                             "tokens_per_s": tokens / max(time.perf_counter() - started, 1e-9)})
    finally:
        private.close()
        model.eval()
    mean = float(np.mean(losses)) if losses else float("nan")
    task.finish(f"{description}: {len(steps)} DP-SGD steps, {budget.describe()}")
    return mean
