#!/usr/bin/env bash
# The main job on the embedded default: check the machine, then fine-tune the bundled
# model on the bundled FAQ end to end (data, LoRA training, evaluation against the base,
# GGUF export, registry) and ask the registered model a held-out question.
set -euo pipefail
cd "$(dirname "$0")/.."
astra=".venv/bin/astra"
dir="${QUICKSTART_DIR:-astra-quickstart}"

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

say "astra doctor"
"$astra" doctor
say "astra quickstart $dir"
"$astra" quickstart "$dir"
