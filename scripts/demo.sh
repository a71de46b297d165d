#!/usr/bin/env bash
# Install everything and open the napari-gdt demo.
# Usage: bash scripts/demo.sh [--dataset her2st|merfish|synthetic] [--screenshot a.png --screenshot-detail b.png]
set -euo pipefail
cd "$(dirname "$0")/.."
DATASET=her2st
prev=""
for a in "$@"; do
  case "$a" in --dataset=*) DATASET="${a#--dataset=}" ;; esac
  [ "$prev" = "--dataset" ] && DATASET="$a"
  prev="$a"
done
# Real data: ../shared/data beside the checkout unless NAPARI_GDT_DATA is set (as scripts/test.sh does).
if [ -z "${NAPARI_GDT_DATA:-}" ] && [ -d ../shared/data ]; then export NAPARI_GDT_DATA="$(cd ../shared/data && pwd)"; fi
online() {  # NAPARI_GDT_OFFLINE=1: never try the network
  [ "${NAPARI_GDT_OFFLINE:-0}" = "0" ] && timeout 5 bash -c 'exec 3<>/dev/tcp/raw.githubusercontent.com/443' >/dev/null 2>&1
}
if [ "$DATASET" = "synthetic" ]; then
  echo "data: none needed (synthetic canvas, untrained generator)"
elif [ -n "${NAPARI_GDT_DATA:-}" ]; then
  echo "data found at $NAPARI_GDT_DATA"
elif online; then
  echo "data: downloading the public $DATASET files from GitHub on first use (sha256-checked, cached)"
else
  echo "demo.sh: offline and no data folder: set NAPARI_GDT_DATA=/path/to/data, or run: bash scripts/demo.sh --dataset synthetic" >&2
  exit 1
fi
if [ ! -f .venv/.napari-gdt-install ] && ! online; then
  echo "demo.sh: offline and .venv is not installed yet: connect to the network once (pip needs it)" >&2
  exit 1
fi
bash scripts/install.sh demo
echo "opening napari: the $DATASET demo (generated tissue appears tile by tile within seconds)…"
exec .venv/bin/napari-gdt demo "$@"
