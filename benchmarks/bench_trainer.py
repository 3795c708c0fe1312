"""fedmkt's training loop against transformers' Trainer on the same work: should a round's training
calls run on Trainer (with a compute_loss override, as TRL's distillation trainers do)?

Same model (SmolLM2-135M-Instruct, LoRA r 8, fp32, CPU), same 16 public questions, batches of 4, AdamW
with the same settings (cosine schedule, clipping at 1.0), the same loss (answer-tail logits, CE); a
FedMKT round makes a few short training calls per party, so each way runs three calls of one epoch
(4 optimizer steps) and the figure is the wall time of a call, construction included, side by side.

    python -m benchmarks.bench_trainer
"""

from __future__ import annotations

import tempfile
import time

import torch

CALLS, QUESTIONS, BATCH = 3, 16, 4


def setup():
    from benchmarks.common import public_questions
    from fedmkt.config import LoraSpec, ModelSpec
    from fedmkt.data.encoding import encode_questions
    from fedmkt.models import attach_lora, load_model

    loaded = load_model(ModelSpec(source="smollm2-135m-instruct"))
    torch.manual_seed(0)
    model = attach_lora(loaded.model, LoraSpec(dropout=0.0))
    return model, encode_questions(loaded.tokenizer, public_questions(QUESTIONS), 256), loaded.tokenizer.pad_token_id


def ours(model, data, pad_id) -> list[float]:
    from fedmkt.config import TrainSpec
    from fedmkt.progress import SILENT
    from fedmkt.training import ComputeClock, train_lora

    spec = TrainSpec(batch_size=BATCH, learning_rate=1e-4)
    times = []
    for call in range(CALLS):
        started = time.perf_counter()
        train_lora(model, data, pad_id, spec, 1, seed=call, clock=ComputeClock(), reporter=SILENT, description="sft")
        times.append(time.perf_counter() - started)
    return times


def with_trainer(model, data, pad_id) -> list[float]:
    from transformers import Trainer, TrainingArguments

    from fedmkt.data.encoding import collate
    from fedmkt.training import tail_logits

    class TailTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            batch = inputs["batch"]
            logits = tail_logits(model, batch)[batch.loss_mask]
            return torch.nn.functional.cross_entropy(logits.float(), batch.labels[batch.loss_mask])

    times = []
    with tempfile.TemporaryDirectory() as out:
        for call in range(CALLS):
            started = time.perf_counter()
            args = TrainingArguments(output_dir=out, per_device_train_batch_size=BATCH, num_train_epochs=1,
                                     learning_rate=1e-4, lr_scheduler_type="cosine", weight_decay=0.1, adam_beta2=0.95,
                                     max_grad_norm=1.0, report_to=[], save_strategy="no", logging_strategy="no",
                                     use_cpu=True, dataloader_num_workers=0, remove_unused_columns=False, seed=call,
                                     disable_tqdm=True)
            trainer = TailTrainer(model=model, args=args, train_dataset=data,
                                  data_collator=lambda rows: {"batch": collate(rows, pad_id)})
            trainer.train()
            times.append(time.perf_counter() - started)
    return times


def main() -> None:
    from benchmarks.common import record

    model, data, pad_id = setup()
    ours(model, data, pad_id)  # warm-ups: first-call allocations and lazy imports count for neither way
    with_trainer(model, data, pad_id)
    loop = ours(model, data, pad_id)
    trainer = with_trainer(model, data, pad_id)
    row = {"calls": CALLS, "steps_per_call": QUESTIONS // BATCH,
           "fedmkt_loop_s_per_call": sum(loop) / CALLS, "trainer_s_per_call": sum(trainer) / CALLS,
           "trainer_vs_loop": sum(trainer) / sum(loop)}
    record("trainer", [row])


if __name__ == "__main__":
    main()
