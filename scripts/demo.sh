#!/usr/bin/env bash
# Install everything and open the napari-gdt demo.  Usage: bash scripts/demo.sh [--dataset her2st|merfish]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh demo
exec .venv/bin/napari-gdt demo "$@"
