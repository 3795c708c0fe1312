#!/usr/bin/env bash
# Set up (once) and run the embedded default FedMKT federation. Extra arguments go to `fedmkt run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/fedmkt run "$@"
