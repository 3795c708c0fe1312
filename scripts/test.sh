#!/usr/bin/env bash
# Set up (once) and run the whole test suite, the real-model slow tests included (bounded in size).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q "$@"
