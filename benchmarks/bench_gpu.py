"""FedMKT's training steps on a GPU at real sizes: a 1B-class server LLM and two SmolLM2-size clients.

Real architectures with random weights (no weights need to travel): the server has Gemma-3-1B's shape
(26 layers, hidden 1152, the 262,144-token vocabulary that makes logits the memory peak), each client
SmolLM2-135M's (30 layers, hidden 576, 49,152 tokens). bfloat16 weights, LoRA r 8 on the attention
projections, batches of 8 sequences of 384 tokens with a 64-token answer tail, top-K 16.

Figures, each measured side by side in this one run with CUDA-synchronised timing:
  kd_vs_sft_tokens_per_s   the server's KD step (fused sparse loss) against a plain LoRA SFT step on the
                           same model and batch                           goal >= 0.9
  kd_vs_sft_peak_memory    GPU peak memory above the loaded model, KD step against SFT step   goal <= 1.05
  round_wall_vs_compute    one round's steps (client SFT, knowledge extraction both ways, server and client
                           KD) as wall time against the model compute the round's clock counts   goal <= 1.10

    python -m benchmarks.bench_gpu            # on a machine with a CUDA GPU; prints "not measured" without
    python -m benchmarks.bench_gpu --smoke    # tiny shapes on the CPU: checks the script, measures nothing
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

SERVER = dict(model_type="gemma3_text", vocab_size=262144, hidden_size=1152, intermediate_size=6912,
              num_hidden_layers=26, num_attention_heads=4, num_key_value_heads=1, head_dim=256,
              max_position_embeddings=4096, sliding_window=512, query_pre_attn_scalar=256,
              tie_word_embeddings=True)
CLIENT = dict(model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
              num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=4096, tie_word_embeddings=True)
SMOKE = {"vocab_size": 512, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}


def build(shape: dict, device: torch.device, dtype: torch.dtype, smoke: bool):
    from transformers import AutoConfig, AutoModelForCausalLM

    from fedmkt.config import LoraSpec
    from fedmkt.models import attach_lora

    settings = dict(shape, **(SMOKE if smoke else {}))
    if smoke and settings["model_type"] == "gemma3_text":
        settings.update(num_attention_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=64)
    if smoke and settings["model_type"] == "llama":
        settings.update(num_attention_heads=4, num_key_value_heads=2)
    config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(device=device, dtype=dtype)
    model.config.use_cache = False
    return attach_lora(model, LoraSpec(dropout=0.0))


def examples(vocab: int, count: int, length: int, tail: int, seed: int):
    from fedmkt.data.encoding import Encoded

    rng = np.random.default_rng(seed)
    return [Encoded(uid=i, input_ids=rng.integers(0, vocab, size=length).astype(np.int64), answer_start=length - tail,
                    answer_ends=np.arange(1, tail + 1, dtype=np.int64)) for i in range(count)]


def soft_targets(vocab: int, k: int, seed: int):
    rng = np.random.default_rng(seed)

    def targets(e):
        ids = rng.integers(0, vocab, size=(e.n_loss, k)).astype(np.int64)
        probs = rng.dirichlet(np.ones(k), size=e.n_loss).astype(np.float32)
        return ids, probs

    return targets


def step_figures(model, data, vocab: int, device: torch.device, batch: int) -> dict:
    """tokens/s and peak memory above the model of an SFT pass and a KD pass over the same batches."""
    from fedmkt.config import TrainSpec
    from fedmkt.progress import SILENT
    from fedmkt.training import ComputeClock, train_lora

    spec = TrainSpec(batch_size=batch, learning_rate=1e-5, max_grad_norm=1.0)
    out = {}
    for kind in ("sft", "kd", "sft", "kd"):  # each twice: the first of each warms kernels and the allocator
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if device.type == "cuda" else 0
        steps: list[dict] = []
        kd = {"targets": soft_targets(vocab, 16, 1), "ce_weight": 0.9} if kind == "kd" else {}
        started = time.perf_counter()
        train_lora(model, data, 0, spec, 1, seed=1, clock=ComputeClock(), reporter=SILENT, description=kind,
                   on_step=steps.append, **kd)
        if device.type == "cuda":
            torch.cuda.synchronize()
        tokens = sum(len(e.input_ids) for e in data)
        out[kind] = {"tokens_per_s": tokens / (time.perf_counter() - started),
                     "peak_above_model_mib": (torch.cuda.max_memory_allocated() - base) / 2**20
                     if device.type == "cuda" else None}
    return out


def round_figures(server, clients, device: torch.device, smoke: bool) -> dict:
    """One round's model work through fedmkt's own loops, timed as wall against the compute clock."""
    from fedmkt.config import TrainSpec
    from fedmkt.progress import SILENT
    from fedmkt.training import ComputeClock, extract_knowledge, train_lora

    n, length, tail = (4, 32, 8) if smoke else (64, 384, 64)
    spec = TrainSpec(batch_size=8, learning_rate=1e-5)
    clock = ComputeClock()
    s_vocab = server.config.vocab_size
    started = time.perf_counter()
    for index, client in enumerate(clients):
        vocab = client.config.vocab_size
        train_lora(client, examples(vocab, n, length, tail, 10 + index), 0, spec, 1, 1, clock, SILENT, "private")
        extract_knowledge(client, examples(vocab, n, length, tail, 20 + index), 0, 16, 8, "client", "t", vocab, clock)
    extract_knowledge(server, examples(s_vocab, n, length, tail, 30), 0, 16, 8, "server", "t", s_vocab, clock)
    train_lora(server, examples(s_vocab, n, length, tail, 30), 0, spec, 1, 1, clock, SILENT, "distill",
               targets=soft_targets(s_vocab, 16, 2), ce_weight=0.9)
    extract_knowledge(server, examples(s_vocab, n, length, tail, 30), 0, 16, 8, "server", "t", s_vocab, clock)
    for index, client in enumerate(clients):
        vocab = client.config.vocab_size
        train_lora(client, examples(vocab, n, length, tail, 20 + index), 0, spec, 1, 1, clock, SILENT, "distill",
                   targets=soft_targets(vocab, 16, 3), ce_weight=0.9)
    wall = time.perf_counter() - started
    return {"wall_s": wall, "compute_s": clock.seconds, "ratio": wall / max(clock.seconds, 1e-9)}


def main() -> None:
    smoke = "--smoke" in sys.argv
    if not smoke and not torch.cuda.is_available():
        print(json.dumps({"gpu": None, "result": "no CUDA device: GPU figures not measured"}))
        return
    device = torch.device("cpu" if smoke else "cuda")
    dtype = torch.float32 if smoke else torch.bfloat16
    server = build(SERVER, device, dtype, smoke)
    clients = [build(CLIENT, device, dtype, smoke) for _ in range(2)]
    vocab = server.config.vocab_size
    steps = step_figures(server, examples(vocab, 2 if smoke else 32, 32 if smoke else 384, 8 if smoke else 64, 0),
                         vocab, device, 2 if smoke else 8)
    row = {"gpu": None if smoke else torch.cuda.get_device_name(), "smoke": smoke,
           "kd_vs_sft_tokens_per_s": steps["kd"]["tokens_per_s"] / steps["sft"]["tokens_per_s"],
           "kd_vs_sft_peak_memory": (steps["kd"]["peak_above_model_mib"] / steps["sft"]["peak_above_model_mib"]
                                     if not smoke else None),
           "steps": steps, "round": round_figures(server, clients, device, smoke)}
    row["round_wall_vs_compute"] = row["round"]["ratio"]
    if smoke:
        print(json.dumps(row))
        return
    from benchmarks.common import record

    record("gpu", [row])


if __name__ == "__main__":
    main()
