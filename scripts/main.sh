#!/usr/bin/env bash
# The main job: set up (idempotent), then train SimCSE with the default `cpu` preset on this
# machine and print the before/after table on the seven STS tasks. Extra arguments go to
# `hardcse train` (e.g. --recipe clusterns, --steps 60).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
if [ -z "${HARDCSE_DATA:-}" ] && [ -d "$root/../shared/data" ]; then
  export HARDCSE_DATA="$root/../shared/data"
fi
export TOKENIZERS_PARALLELISM=false
out="runs/main-$(date +%Y%m%d-%H%M%S)"
exec .venv/bin/hardcse train --preset cpu --output "$out" "$@"
