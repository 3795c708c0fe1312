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
    """Seconds spent in model forward/backward/optimizer steps (what a round cannot avoid)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextmanager
    def measure(self):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start


def tail_logits(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """[B, tail, V] logits at the loss columns (the column after the last predicts nothing we use)."""
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                logits_to_keep=batch.tail + 1, use_cache=False)
    return out.logits[:, :-1]


def _pad_rows(arrays: list[np.ndarray], fill) -> np.ndarray:
    width = max(a.shape[1] for a in arrays)
    return np.concatenate([np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=fill) for a in arrays])


TargetsFn = Callable[[Encoded], tuple[np.ndarray, np.ndarray]]  # example -> (ids [n_loss,K], probs [n_loss,K])


def train_lora(model: torch.nn.Module, examples: list[Encoded], pad_id: int, spec: TrainSpec, epochs: int,
               seed: int, clock: ComputeClock, reporter: Reporter, description: str,
               targets: TargetsFn | None = None, ce_weight: float = 1.0) -> float:
    """Steps (1), (5), (7): SFT on labels (targets=None) or FedMKT KD, ce_weight * CE + (1 - ce_weight) *
    soft CE. Returns the mean loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=0.0)
    device = next(model.parameters()).device
    order = list(examples)
    rng = random.Random(seed)
    steps = epochs * ((len(order) + spec.batch_size - 1) // spec.batch_size)
    task = reporter.task(description, steps)
    model.train()
    losses = []
    for _ in range(epochs):
        rng.shuffle(order)
        for chunk, batch in batches(order, spec.batch_size, pad_id):
            batch = batch.to(device)
            if targets is not None:
                pairs = [targets(e) for e in chunk]
                ids = torch.from_numpy(_pad_rows([p[0] for p in pairs], 0)).to(device)
                probs = torch.from_numpy(_pad_rows([p[1] for p in pairs], 0.0)).to(device)
            with clock.measure():
                logits = tail_logits(model, batch)[batch.loss_mask]  # [P, V], examples in order
                labels = batch.labels[batch.loss_mask]
                if targets is None:
                    loss = torch.nn.functional.cross_entropy(logits.float(), labels)
                else:
                    loss = fedmkt_loss(logits, labels, ids, probs, ce_weight)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            losses.append(loss.item())
            task.advance(1, f"loss {np.mean(losses[-8:]):.3f}")
    model.eval()
    mean = float(np.mean(losses)) if losses else float("nan")
    task.finish(f"{description}: {steps} steps, mean loss {mean:.4f}")
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
