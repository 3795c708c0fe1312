"""Run every benchmark and write benchmarks/results/summary.md (python -m benchmarks.run_all)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

from benchmarks.common import RESULTS

BENCHMARKS = ["bench_vocab", "bench_alignment", "bench_memory", "bench_bytes", "bench_round", "bench_trainer",
              "bench_tokenizers", "bench_flower", "learning_curve", "bench_clients", "bench_privacy"]


def table() -> str:
    def load(name):
        return json.loads((RESULTS / f"{name}.json").read_text())

    vocab, align, memory, wire, rounds = (load(n) for n in ("vocab", "alignment", "memory", "bytes", "round"))
    lines = ["| what | ours | naive / reference | ratio | target |", "|---|---|---|---|---|"]
    for row in vocab:
        lines.append(f"| vocab mapping {row['direction']} | {row['ours_s']} s | {row['reference_extrapolated_s']} s "
                     f"(extrapolated) | {row['speedup']}x faster | <60 s both, >=100x |")
    a, b = align
    lines.append(f"| DTW, {a['examples']} examples (same path: {a['identical_dtw_paths']}) | {a['ours_compiled_dtw_s']} s | "
                 f"{a['reference_python_dtw_s']} s | {a['speedup_dtw']}x faster | >=20x |")
    lines.append(f"| alignment as run (byte boundaries, {b['dtw_fallbacks']} DTW fallbacks; agreement "
                 f"{b['agreement_where_both_defined']}) | "
                 f"{b['ours_aligner_s']} s | {a['reference_python_dtw_s']} s | {b['speedup_aligner']}x faster | >=20x |")
    m = memory[0]
    lines.append(f"| KD step peak memory over SFT step ({m['model']}) | {m['sparse_kd_mib']} MiB | "
                 f"{m['dense_kd_mib']} MiB dense (SFT {m['sft_mib']} MiB) | {m['sparse_over_sft']} vs {m['dense_over_sft']} | <=1.15 |")
    packets = [w for w in wire if w["benchmark"] == "bytes_per_party_round"]
    w = packets[0]
    lines.append(f"| bytes per client per round (8-bit log-probs, xz) | {w['bits8_xz_bytes']} | "
                 f"{w['reference_layout_pickle_bytes']} reference layout; {w['like_for_like_pickle_bytes']} same "
                 f"positions | {w['ratio_reference']}x; {w['bits8_xz_ratio']}x smaller | >=5x |")
    for w in packets:
        lines.append(f"| packet of the {w['sender']}: float16 plain / float16 xz / 8-bit plain / 8-bit xz | "
                     f"{w['bits16_plain_bytes']} / {w['bits16_xz_bytes']} / {w['bits8_plain_bytes']} / "
                     f"{w['bits8_xz_bytes']} | {w['like_for_like_pickle_bytes']} same positions | "
                     f"{w['bits16_plain_ratio']}x / {w['bits16_xz_ratio']}x / {w['bits8_plain_ratio']}x / "
                     f"{w['bits8_xz_ratio']}x | >=5x |")
    for e in (w for w in wire if w["benchmark"] == "bits8_vs_bits16_one_round"):
        low, high = e["interval95"]
        lines.append(f"| one round, 8-bit vs float16 packets: {e['party']} accuracy ({e['questions']} questions; "
                     f"{e['questions_changed']} changed; selection identical: {e['selection_identical']}) | "
                     f"{e['acc_bits8']} | {e['acc_bits16']} | {e['difference']:+.4f} [{low:+.4f}, {high:+.4f}] | "
                     f"interval covers 0 |")
    for r in rounds:
        lines.append(f"| round {r['round']} wall / model compute | {r['wall_s']} s | {r['model_compute_s']} s | "
                     f"{r['wall_over_compute']} | <=1.10 |")
    if (RESULTS / "flower.json").is_file():
        flower = load("flower")
        local = flower[0]
        for f in flower[1:]:
            loads = max(f["model_loads_per_client"].values())
            lines.append(f"| Flower round ({f['way']}; {f['threads_per_party']} thread a party), wall / model compute; "
                         f"model loads per client | {f['wall_over_compute']} ({f['round_wall_s']} s); {loads} | "
                         f"local {local['wall_over_compute']} ({local['round_wall_s']} s) | {f['ratio_to_local']}x local | "
                         f"<=1.15x; 1 |")
    if (RESULTS / "learning_curve.json").is_file():
        for c in load("learning_curve"):
            if c["benchmark"] == "choice_scoring":
                lines.append(f"| evaluation of {c['questions']} cloze questions ({c['task']}, {c['model']}; same answers: "
                             f"{c['same_answers']}) | {c['shared_prompt_s']} s, prompt once | {c['full_sequences_s']} s, "
                             f"every choice in full | {c['speedup']}x faster | cheaper than training |")
            elif c["private"]:
                low, high = c["interval"]
                lines.append(f"| fine-tuned on {c['private']} private examples ({c['task']}, {c['model']}, "
                             f"{c['format']}; {c['eval']} held-out) | {c['acc']} | zero-shot {c['acc'] - c['vs_zero_shot']:.3f} | "
                             f"{c['vs_zero_shot']:+.3f} [{low:+.3f}, {high:+.3f}] | >= +0.10, interval above 0 |")
    if (RESULTS / "trainer.json").is_file():
        t = load("trainer")[0]
        lines.append(f"| training call ({t['steps_per_call']} steps, SmolLM2-135M) | {t['fedmkt_loop_s_per_call']:.2f} s | "
                     f"{t['trainer_s_per_call']:.2f} s with transformers' Trainer | {t['trainer_vs_loop']:.3f} | "
                     f"decides the loop |")
    return "\n".join(lines)


def clients_table() -> str:
    """Per client count: bytes, server memory and CPU per client, two-step against one-step exchange; then the
    64-client federation."""
    rows = json.loads((RESULTS / "clients.json").read_text())
    server = [r for r in rows if r["benchmark"] == "server"]
    lines = ["| clients | up bytes per client: two-step / one-step (ratio) | down bytes per client: two-step / "
             "one-step (ratio) | server peak above start, MiB: two-step / one-step | server traced peak, MiB: "
             "two-step / one-step | server CPU per client, ms: "
             "two-step / one-step |", "|---|---|---|---|---|---|"]
    for two in (r for r in server if r["exchange"] == "two_step"):
        one = next(r for r in server if r["clients"] == two["clients"] and r["exchange"] == "one_step")
        lines.append(f"| {two['clients']} | {two['up_bytes_per_client']} / {one['up_bytes_per_client']} "
                     f"({two['up_over_one_step']}) | {two['down_bytes_per_client']} / {one['down_bytes_per_client']} "
                     f"({two['down_over_one_step']}) | {two['server_peak_above_start_mib']} / "
                     f"{one['server_peak_above_start_mib']} | {two['server_traced_peak_mib']} / "
                     f"{one['server_traced_peak_mib']} | {two['server_non_model_cpu_per_client_ms']} / "
                     f"{one['server_non_model_cpu_per_client_ms']} |")
    for f in (r for r in rows if r["benchmark"] == "federation"):
        base = "one shared base" if f["shared_base"] else "a copy of the base each"
        lines += ["", f"{f['clients']} tiny clients of one model in one process ({base}), {f['per_round']} sampled a "
                      f"round, {f['rounds']} rounds: peak resident memory {f['peak_rss_mib']} MiB, {f['wall_s']} s."]
    return "\n".join(lines)


def privacy_table(name: str = "privacy") -> str:
    """Membership inference per setting: held-out accuracy, then AUC and TPR at 1% FPR of each attack on each
    target, every figure with its 95% interval (results/<name>.json)."""
    rows = json.loads((RESULTS / f"{name}.json").read_text())

    def shown(figure: dict) -> str:
        low, high = figure["interval"]
        return f"{figure['value']:.3f} [{low:.3f}, {high:.3f}]"

    zero = next(r for r in rows if r["setting"] == "zero-shot")
    lines = [f"{zero.get('task', 'the default task')}: {zero['members']} members (private rows, {zero['epochs']} epochs), "
             f"{zero['non_members']} non-members; "
             f"held-out accuracy on {zero['accuracy_questions']} other questions (zero-shot {zero['accuracy']:.3f}).",
             "", "| setting | epsilon spent (noise) | held-out accuracy, vs zero-shot | target | AUC: loss | AUC: "
             "calibrated | TPR at 1% FPR: loss | TPR at 1% FPR: calibrated |", "|---|---|---|---|---|---|---|---|"]
    for setting in (r for r in rows if "accuracy" in r and r["setting"] != "zero-shot"):
        low, high = setting["interval"]
        spent = (f"{setting['epsilon']:.2f} ({setting['noise_multiplier']:.2f})" if "epsilon" in setting else "-")
        accuracy = f"{setting['accuracy']:.3f}, {setting['vs_zero_shot']:+.3f} [{low:+.3f}, {high:+.3f}]"
        for target in ("adapter", "server oracle"):
            attack = {r["attack"]: r for r in rows if r.get("target") == target and r["setting"] == setting["setting"]}
            lines.append(f"| {setting['setting']} | {spent} | {accuracy} | {target} | {shown(attack['loss']['auc'])} | "
                         f"{shown(attack['calibrated']['auc'])} | {shown(attack['loss']['tpr_at_1pct_fpr'])} | "
                         f"{shown(attack['calibrated']['tpr_at_1pct_fpr'])} |")
    return "\n".join(lines)


def tokenizer_tables() -> str:
    """Per tokenizer the canonical-text check; per ordered pair the map time (sender row, receiver column),
    with alignment figures summarised under the matrix."""
    rows = json.loads((RESULTS / "tokenizers.json").read_text())
    families = [r for r in rows if r["benchmark"] == "canonical_text"]
    pairs = {(r["sender"], r["receiver"]): r for r in rows if r["benchmark"] == "tokenizer_pair"}
    names = [r["tokenizer"] for r in families]
    lines = ["| tokenizer | vocabulary | special | tokens checked against decode | mismatches |", "|---|---|---|---|---|"]
    lines += [f"| {r['tokenizer']} | {r['vocab']} | {r['special']} | {r['checked_against_decode']} | {r['mismatches']} |"
              for r in families]
    lines += ["", "MinED map time in seconds, sender (row) -> receiver (column); * = not exact on the sample:", "",
              "| sender \\ receiver | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for a in names:
        cells = ["-" if a == b else f"{pairs[a, b]['map_s']}{'' if pairs[a, b]['exact_on_sample'] else '*'}"
                 for b in names]
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    everything = list(pairs.values())
    shared = sum(r["shared_boundaries"] for r in everything)
    lines += ["", f"{len(everything)} ordered pairs: exact on every sample "
              f"({sum(r['exact_on_sample'] for r in everything)}/{len(everything)}, {everything[0]['sample']} sender "
              f"tokens each); {sum(r['map_s'] <= 10 for r in everything)} maps within 10 s, the slowest "
              f"{max(r['map_s'] for r in everything)} s. Alignment: {shared} shared whole-character boundaries, "
              f"lowest share aligned in a pair {min(r['aligned_share'] for r in everything)}, "
              f"{sum(r['wrong'] for r in everything)} wrong pairs, "
              f"{sum(r['aligned_inside_characters'] for r in everything)} pairs matched inside a character."]
    return "\n".join(lines)


def main() -> None:
    names = sys.argv[1:] or BENCHMARKS
    for name in names:
        print(f"== {name}", flush=True)
        subprocess.run([sys.executable, "-m", f"benchmarks.{name}"], check=True)
    text = f"Measured on {platform.machine()}, {__import__('os').cpu_count()} cores, CPU only.\n\n{table()}\n"
    if (RESULTS / "tokenizers.json").is_file():
        text += f"\n{tokenizer_tables()}\n"
    if (RESULTS / "clients.json").is_file():
        text += f"\n{clients_table()}\n"
    if (RESULTS / "privacy.json").is_file():
        text += f"\n{privacy_table()}\n"
    (RESULTS / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
