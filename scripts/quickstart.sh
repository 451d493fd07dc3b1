#!/usr/bin/env bash
# The main job on the embedded default: check the machine, prepare the bundled model,
# ask it one question, then (in a terminal) hand over to an interactive chat.
set -euo pipefail
cd "$(dirname "$0")/.."
astra=".venv/bin/astra"
model="smollm2-135m-instruct"
question="What is the capital of France? Answer in one word."

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

say "astra doctor"
"$astra" doctor
say "astra models pull $model"
"$astra" models pull "$model"
say "astra chat $model -p \"$question\""
"$astra" chat "$model" -p "$question"
if [ -t 0 ] && [ -t 1 ]; then
  say "astra chat $model"
  "$astra" chat "$model"
else
  printf '\nChat with it any time: %s chat %s\n' "$astra" "$model"
fi
