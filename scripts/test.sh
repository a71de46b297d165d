#!/usr/bin/env bash
# Install everything from scratch and run the whole test suite headless (virtual display via pytest-xvfb).
# Usage: bash scripts/test.sh [pytest options]   (NAPARI_GDT_TEST_WORKERS=1 runs serially)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh dev
# Real data for the tests: ../shared/data beside the checkout unless NAPARI_GDT_DATA is set.
if [ -z "${NAPARI_GDT_DATA:-}" ] && [ -d ../shared/data ]; then export NAPARI_GDT_DATA="$(cd ../shared/data && pwd)"; fi
if [ -n "${NAPARI_GDT_DATA:-}" ]; then echo "data found at $NAPARI_GDT_DATA"; else echo "data: no folder (set NAPARI_GDT_DATA); the realdata tests are skipped"; fi
export MPLBACKEND=Agg NO_MKDOCS_2_WARNING=1
if [ -f mkdocs.yml ]; then
  echo "building the docs (mkdocs --strict)…"
  .venv/bin/python -m mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
fi
echo "linting: ruff check + ruff format --check"
.venv/bin/python -m ruff check .
.venv/bin/python -m ruff format --check .
WORKERS="${NAPARI_GDT_TEST_WORKERS:-2}"
N=$(.venv/bin/python -m pytest -q -p no:cacheprovider --collect-only "$@" 2>/dev/null | grep -Eo '^[0-9]+ tests? collected' | grep -Eo '^[0-9]+' || echo "?")
t0=$SECONDS
# Measured on the project machine (README, Quick start): 2 min 38 s on 2 workers when idle, 7-10 min when shared, about 18 min serially.
if [ "$WORKERS" -gt 1 ]; then
  echo "running $N tests on $WORKERS workers, in about 3-7 minutes…"
  .venv/bin/python -m pytest -q -p no:cacheprovider -n "$WORKERS" --dist loadfile "$@"
else
  echo "running $N tests serially, in about 18 minutes…"
  .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
fi
echo "tests: done in $(( (SECONDS - t0) / 60 )) min $(( (SECONDS - t0) % 60 )) s"
# The whole suite also runs the SpatialData tests in their own venv (spatialdata pins an older dask).
if [ "$#" -eq 0 ] && [ -z "${NAPARI_GDT_NO_SPATIALDATA:-}" ]; then
  echo "running the SpatialData tests in .venv-sdata (its own install the first time)…"
  bash scripts/test_spatialdata.sh
fi
