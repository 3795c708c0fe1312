"""Peak memory of one training step on Gemma-3-270M (262k vocabulary): SFT vs sparse KD vs dense KD.

Each step runs in a fresh process; the figure is the step's peak resident memory above what the
process held just before it (model, batch and targets already in place). CPU, fp32, LoRA.
  sft:    CE on label positions, logits for the answer tail only
  sparse: ours, the same plus the soft CE gathered at the K target ids
  dense:  the reference way, logits for every position and a dense [batch, length, vocab] target
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

SOURCE = os.environ.get("FEDMKT_BENCH_MEMORY_MODEL", "gemma3-270m")


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def step(kind: str) -> int:
    import torch

    from benchmarks.common import public_questions
    from fedmkt.config import LoraSpec, ModelSpec
    from fedmkt.data.encoding import collate
    from fedmkt.distill import fedmkt_loss
    from fedmkt.data.encoding import encode_questions
    from fedmkt.models import attach_lora, load_model
    from fedmkt.training import tail_logits

    torch.manual_seed(0)
    loaded = load_model(ModelSpec(source=SOURCE))
    # Dropout off: its masks' allocations vary by hundreds of MiB between identical runs (glibc), which
    # would blur a comparison of the loss.
    model = attach_lora(loaded.model, LoraSpec(dropout=0.0))
    model.train()
    examples = encode_questions(loaded.tokenizer, public_questions(4), 256)
    batch = collate(examples, loaded.tokenizer.pad_token_id)
    vocab, k = model.config.vocab_size, 16
    ids = torch.randint(0, vocab, (int(batch.loss_mask.sum()), k))
    probs = torch.softmax(torch.randn(ids.shape), -1)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    if kind == "dense":  # the whole sequence's distributions, as the reference keeps them
        full_ids = torch.randint(0, vocab, (*batch.input_ids.shape, k))
        full_probs = torch.softmax(torch.randn(full_ids.shape), -1)
    before = rss_kib()
    if kind == "dense":
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       position_ids=batch.position_ids).logits.float()
        target = torch.zeros_like(logits).scatter_(-1, full_ids, full_probs)  # dense [B, T, V]
        kd = -(target * torch.log_softmax(logits, -1)).sum(-1)
        shifted = logits[:, :-1][batch.attention_mask[:, 1:].bool()]
        ce = torch.nn.functional.cross_entropy(shifted, batch.input_ids[:, 1:][batch.attention_mask[:, 1:].bool()])
        loss = 0.9 * ce + 0.1 * (kd * batch.attention_mask).sum() / batch.attention_mask.sum()
    else:
        logits = tail_logits(model, batch)[batch.loss_mask]
        labels = batch.labels[batch.loss_mask]
        loss = (torch.nn.functional.cross_entropy(logits.float(), labels) if kind == "sft"
                else fedmkt_loss(logits, labels, ids, probs, 0.9))
    loss.backward()
    optimizer.step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak - before


def main() -> None:
    if len(sys.argv) > 1:
        print(json.dumps({"kind": sys.argv[1], "step_peak_kib": step(sys.argv[1])}))
        return
    from benchmarks.common import record

    peaks = {}
    for kind in ("sft", "sparse", "dense"):
        # A fixed mmap threshold: glibc otherwise raises it as large blocks are freed, and then keeps
        # freed memory in the heap, which made identical runs differ by hundreds of MiB.
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
        out = subprocess.run([sys.executable, "-m", "benchmarks.bench_memory", kind], check=True, capture_output=True,
                             text=True, env=env).stdout.strip().splitlines()[-1]
        peaks[kind] = json.loads(out)["step_peak_kib"]
    record("memory", [{"benchmark": "kd_step_peak_memory", "model": SOURCE,
                       "sft_mib": round(peaks["sft"] / 1024, 1), "sparse_kd_mib": round(peaks["sparse"] / 1024, 1),
                       "dense_kd_mib": round(peaks["dense"] / 1024, 1),
                       "sparse_over_sft": round(peaks["sparse"] / peaks["sft"], 3),
                       "dense_over_sft": round(peaks["dense"] / peaks["sft"], 2)}])


if __name__ == "__main__":
    main()
