#!/usr/bin/env bash
# The SpatialData tests in their own venv (./.venv-sdata): spatialdata 0.7 pins dask/distributed < 2026.1.2
# (and so ome-zarr 0.15), older than the main venv resolves to, so it stays out of ./.venv.
# Usage: bash scripts/test_spatialdata.sh [pytest args]   (default: the SpatialData, Visium HD, napari-spatialdata tests
# and the SpatialData tutorial)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv-sdata/bin/python ] || "$PY" -m venv .venv-sdata
.venv-sdata/bin/python -m pip install -q --upgrade pip
.venv-sdata/bin/python -m pip install -q "torch==2.13.0"
.venv-sdata/bin/python -m pip install -q -e ".[dev,spatialdata]" napari-spatialdata
if [ -z "${NAPARI_GDT_DATA:-}" ] && [ -d ../shared/data ]; then export NAPARI_GDT_DATA="$(cd ../shared/data && pwd)"; fi
export MPLBACKEND=Agg
if [ "$#" -eq 0 ]; then
  set -- tests/expression/test_spatialdata.py tests/expression/test_visium_hd.py tests/widgets/test_napari_spatialdata.py tests/test_docs.py -k "not tutorial_commands_run or spatialdata"
fi
.venv-sdata/bin/python -m pytest -q -p no:cacheprovider "$@"
