#!/usr/bin/env bash
# Install everything from scratch and run the whole test suite headless (virtual display via pytest-xvfb).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh dev
# Real data for the tests: ../shared/data beside the checkout unless NAPARI_GDT_DATA is set.
if [ -z "${NAPARI_GDT_DATA:-}" ] && [ -d ../shared/data ]; then export NAPARI_GDT_DATA="$(cd ../shared/data && pwd)"; fi
export MPLBACKEND=Agg NO_MKDOCS_2_WARNING=1
if [ -f mkdocs.yml ]; then .venv/bin/python -m mkdocs build --strict --quiet --site-dir "$(mktemp -d)"; fi
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
# The whole suite also runs the SpatialData tests in their own venv (spatialdata pins an older dask).
if [ "$#" -eq 0 ] && [ -z "${NAPARI_GDT_NO_SPATIALDATA:-}" ]; then bash scripts/test_spatialdata.sh; fi
