#!/usr/bin/env bash
# Install napari-gdt and everything it needs into ./.venv (system packages too, when root).
# Usage: bash scripts/install.sh [EXTRAS]   (default extras: dev)
# Prints one line per stage. Skips the pip steps when .venv already holds this pyproject.toml's install.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-dev}"
t0=$(date +%s)
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1 && ! command -v Xvfb >/dev/null 2>&1; then
  echo "installing: system packages (Xvfb, Mesa GL, Qt xcb libraries) with apt-get…"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends xvfb xauth libgl1-mesa-dri libgl1 libegl1 libxkbcommon-x11-0 \
    libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 \
    libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libdbus-1-3 libfontconfig1 libxrender1 libxi6 >/dev/null
elif ! command -v Xvfb >/dev/null 2>&1; then
  echo "note: Xvfb not found and not root; install xvfb and the Qt xcb libraries for headless tests" >&2
fi
PY="${PYTHON:-python3}"
STAMP=".venv/.napari-gdt-install"
WANT="$(cat pyproject.toml | sha256sum | cut -c1-16) ${EXTRAS}"
HAVE="$(cat "$STAMP" 2>/dev/null || true)"
# dev includes everything demo needs
if [ -x .venv/bin/napari-gdt ] && { [ "$HAVE" = "$WANT" ] || { [ "$EXTRAS" = "demo" ] && [ "$HAVE" = "${WANT% *} dev" ]; }; }; then
  echo "installing: .venv is up to date (napari-gdt[${EXTRAS}]); skipped"
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  echo "installing: creating .venv with $("$PY" --version 2>&1)…"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# The CPU build of torch (an open range would pull a multi-GB CUDA build).
echo "installing: torch 2.13.0 (CPU build; a few minutes the first time)…"
.venv/bin/python -m pip install -q "torch==2.13.0"
echo "installing: napari-gdt[${EXTRAS}] and its dependencies (napari, PyQt6, zarr, dask…)…"
.venv/bin/python -m pip install -q -e ".[${EXTRAS}]"
echo "$WANT" > "$STAMP"
echo "installing: done in $(( $(date +%s) - t0 )) s"
