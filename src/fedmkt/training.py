"""LoRA training and knowledge extraction loops, with progress reports and a model-compute clock.

Logits are produced only for the answer tail of each left-padded batch (`logits_to_keep`), so the
vocabulary-sized tensor is [batch, answer length, vocab], never [batch, sequence length, vocab].
"""

from __future__ import annotations

import random
import time
from contextlib import contextmanager
from typing import Callable

import numpy as np
import torch

from fedmkt.config import TrainSpec
from fedmkt.data.encoding import Batch, Encoded, batches
from fedmkt.distill import fedmkt_loss
from fedmkt.knowledge import KnowledgePacket
from fedmkt.progress import SILENT, Reporter


class ComputeClock:
    """Seconds spent in model forward/backward/optimizer steps (what a round cannot avoid). On CUDA the
    clock waits for the device at both ends: kernels run asynchronously, and unsynchronised timing would
    charge their time to whatever code waits next."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextmanager
    def measure(self):
        sync = torch.cuda.synchronize if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        if sync:
            sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            if sync:
                sync()
            self.seconds += time.perf_counter() - start


@contextmanager
def seeded(seed: int, device: torch.device):
    """Torch's generators seeded for this block only, then restored: what happens inside depends on `seed`
    alone, not on how much anything before it drew (so local and Flower runs agree)."""
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def tail_logits(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """[B, tail, V] logits at the loss columns (the column after the last predicts nothing we use)."""
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                logits_to_keep=batch.tail + 1, use_cache=False)
    return out.logits[:, :-1]


def _pad_rows(arrays: list[np.ndarray], fill) -> np.ndarray:
    width = max(a.shape[1] for a in arrays)
    return np.concatenate([np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=fill) for a in arrays])


TargetsFn = Callable[[Encoded], tuple[np.ndarray, np.ndarray]]  # example -> (ids [n_loss,K], probs [n_loss,K])


def adamw(params: list[torch.nn.Parameter], spec: TrainSpec) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=spec.weight_decay, betas=spec.adam_betas)


def scheduler_for(optimizer: torch.optim.Optimizer, spec: TrainSpec, total_steps: int):
    from transformers import get_scheduler

    name = "constant_with_warmup" if spec.schedule == "constant" else spec.schedule
    # Whole warmup steps only, rounded down: a warmup step starts at learning rate 0, and a short call (a
    # dozen steps a round) should not lose one to a ratio meant for thousands.
    return get_scheduler(name, optimizer, num_warmup_steps=int(spec.warmup_ratio * total_steps),
                         num_training_steps=total_steps)


def mixed_precision(spec: TrainSpec, device: torch.device) -> tuple[bool, torch.dtype]:
    """Whether to autocast (CUDA only: float32 weights, bf16/fp16 compute) and in which dtype."""
    enabled = spec.mixed_precision != "no" and device.type == "cuda"
    return enabled, torch.bfloat16 if spec.mixed_precision == "bf16" else torch.float16


def _soft_targets(chunk: list[Encoded], targets: TargetsFn, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's sparse soft targets, [P, K] ids and probabilities in the examples' order, padded to one K."""
    pairs = [targets(e) for e in chunk]
    ids = torch.from_numpy(_pad_rows([p[0] for p in pairs], 0)).to(device)
    probs = torch.from_numpy(_pad_rows([p[1] for p in pairs], 0.0)).to(device)
    return ids, probs


def _batch_loss(model: torch.nn.Module, batch: Batch, soft: tuple[torch.Tensor, torch.Tensor] | None,
                ce_weight: float, autocast: tuple[bool, torch.dtype]) -> torch.Tensor:
    """CE on the labels (SFT), or FedMKT's ce_weight * CE + (1 - ce_weight) * soft CE, over the answer tokens."""
    enabled, dtype = autocast
    with torch.autocast(batch.input_ids.device.type, dtype=dtype, enabled=enabled):
        logits = tail_logits(model, batch)[batch.loss_mask]  # [P, V], examples in order
    labels = batch.labels[batch.loss_mask]
    if soft is None:
        return torch.nn.functional.cross_entropy(logits.float(), labels)
    return fedmkt_loss(logits, labels, soft[0], soft[1], ce_weight)


def _optimizer_step(params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer, scheduler,
                    scaler: torch.amp.GradScaler, max_grad_norm: float | None) -> float:
    """Clip, step, advance the schedule, clear the gradients; returns the learning rate the step used."""
    if max_grad_norm is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    learning_rate = scheduler.get_last_lr()[0]
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return learning_rate


def train_lora(model: torch.nn.Module, examples: list[Encoded], pad_id: int, spec: TrainSpec, epochs: int,
               seed: int, clock: ComputeClock, reporter: Reporter, description: str,
               targets: TargetsFn | None = None, ce_weight: float = 1.0,
               on_step: Callable[[dict], None] | None = None) -> float:
    """Steps (1), (5), (7): SFT on labels (targets=None) or FedMKT KD, ce_weight * CE + (1 - ce_weight) *
    soft CE, with AdamW, warmup and schedule, gradient accumulation and clipping, and autocast on CUDA.
    `on_step` gets each optimizer step's loss, learning rate and tokens/s. Returns the mean loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = adamw(params, spec)
    device = next(model.parameters()).device
    order = list(examples)
    rng = random.Random(seed)
    passes = (len(order) + spec.batch_size - 1) // spec.batch_size  # forward passes per epoch
    per_epoch = (passes + spec.gradient_accumulation - 1) // spec.gradient_accumulation
    scheduler = scheduler_for(optimizer, spec, epochs * per_epoch)
    autocast = mixed_precision(spec, device)
    scaler = torch.amp.GradScaler("cuda", enabled=autocast[0] and spec.mixed_precision == "fp16")
    task = reporter.task(description, epochs * passes)
    model.train()
    losses: list[float] = []
    step = 0
    with seeded(seed, device):  # dropout depends on this call alone
        for _ in range(epochs):
            rng.shuffle(order)
            group: list[float] = []
            tokens, started = 0, time.perf_counter()
            for index, (chunk, batch) in enumerate(batches(order, spec.batch_size, pad_id)):
                batch = batch.to(device)
                soft = None if targets is None else _soft_targets(chunk, targets, device)
                # The last group of an epoch may be short: average over the passes it really has.
                size = min(spec.gradient_accumulation, passes - (index // spec.gradient_accumulation)
                           * spec.gradient_accumulation)
                with clock.measure():
                    loss = _batch_loss(model, batch, soft, ce_weight, autocast)
                    scaler.scale(loss / size).backward()
                group.append(loss.item())
                tokens += int(batch.attention_mask.sum())
                task.advance(1, f"loss {np.mean((losses + group)[-8:]):.3f}")
                if len(group) < size:
                    continue
                with clock.measure():
                    learning_rate = _optimizer_step(params, optimizer, scheduler, scaler, spec.max_grad_norm)
                step += 1
                losses.extend(group)
                if on_step is not None:
                    elapsed = max(time.perf_counter() - started, 1e-9)
                    on_step({"step": step, "loss": float(np.mean(group)), "learning_rate": float(learning_rate),
                             "tokens_per_s": tokens / elapsed})
                group, tokens, started = [], 0, time.perf_counter()
    model.eval()
    mean = float(np.mean(losses)) if losses else float("nan")
    task.finish(f"{description}: {step} steps, mean loss {mean:.4f}")
    return mean


@torch.no_grad()
def extract_knowledge(model: torch.nn.Module, examples: list[Encoded], pad_id: int, top_k: int, batch_size: int,
                      sender: str, tokenizer_id: str, vocab_size: int, clock: ComputeClock,
                      reporter: Reporter = SILENT) -> KnowledgePacket:
    """Steps (2) and (6): per-example mean CE and per-loss-position top-K log-probs on the public set."""
    model.eval()
    device = next(model.parameters()).device
    task = reporter.task(f"{sender}: knowledge", len(examples))
    ce, ids, logps, counts = [], [], [], []
    for chunk, batch in batches(examples, batch_size, pad_id):
        batch = batch.to(device)
        with clock.measure():
            logp = torch.log_softmax(tail_logits(model, batch).float(), dim=-1)
            nll = -logp.gather(-1, batch.labels.unsqueeze(-1)).squeeze(-1)
            values, indices = logp[batch.loss_mask].topk(min(top_k, logp.shape[-1]), dim=-1)
        per_example = (nll * batch.loss_mask).sum(1) / batch.loss_mask.sum(1)
        ce.append(per_example.cpu().numpy())
        ids.append(indices.to(torch.int32).cpu().numpy())
        logps.append(values.clamp(min=-60000.0).to(torch.float16).cpu().numpy())
        counts.extend(e.n_loss for e in chunk)
        task.advance(len(chunk))
    offsets = np.zeros(len(examples) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(counts)
    task.finish(f"{sender}: knowledge on {len(examples)} public examples")
    return KnowledgePacket(sender=sender, tokenizer=tokenizer_id, vocab_size=vocab_size,
                           example_ids=np.array([e.uid for e in examples], dtype=np.int64),
                           ce=np.concatenate(ce).astype(np.float32), offsets=offsets,
                           topk_ids=np.concatenate(ids), topk_logprobs=np.concatenate(logps)).validate()
