#!/usr/bin/env bash
# `make demo`: generate the quickstart zoo (vision + language, embedded data); `zoo generate` ends with its status.
set -euo pipefail
cd "$(dirname "$0")/.."
ZOO=${ZOO:-zoos/quickstart}
SECONDS=0
.venv/bin/zoo generate recipes/configs/zoos/quickstart.yaml --zoo-dir "$ZOO"
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n 1)
echo
echo "make demo: $((SECONDS / 60)) min $((SECONDS % 60)) s for zoo generate on ${cpu:-this CPU}, $(nproc) cores"
echo "Show this table again at any time: .venv/bin/zoo status $ZOO"
echo "Load any member with stock transformers, e.g.:"
first=$(ls -d "$ZOO"/vision/pretraining/*/checkpoint_* | tail -n 1)
echo "  python -c \"from transformers import AutoModel; print(AutoModel.from_pretrained('$first'))\""
