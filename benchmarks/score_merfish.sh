#!/usr/bin/env bash
# The acceptance figures of issue 15 for one merfish-dapi candidate, on the held-out quarter of the field.
#
#   NAPARI_GDT_DATA=DATA benchmarks/score_merfish.sh MODEL OUT [CANVASES]
#
# MODEL: a bundle or bundled name; OUT: a new folder; CANVASES: the folder of
# `python -m napari_gdt.training.recipes merfish --out CANVASES` (built there when missing).
# `napari-gdt evaluate --json --seeds 3 --c2st --tile 128` over output px 0:1040,864:1152 (excluded
# from every training window; baselines fitted on the rest of the field), and real | MODEL |
# merfish-dapi figures (whole field and 250 µm). benchmarks/acceptance_table.py OUT prints the bars
# that apply (no depth or what-if rows: those are her2st's). Keep OUT outside the repository.
set -euo pipefail
MODEL=${1:?MODEL}; OUT=${2:?OUT}; CAN=${3:-${OUT}/canvases}
: "${NAPARI_GDT_DATA:?set NAPARI_GDT_DATA to the data folder}"
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(dirname "$HERE")
PY=${PY:-python3}
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=1
M=$NAPARI_GDT_DATA/merfish_mouse_brain
mkdir -p "$OUT"
if [ ! -e "$CAN/merfish_z0.ome.zarr" ]; then
  "$PY" -m napari_gdt.training.recipes merfish --out "$CAN" >"$OUT/recipes.log" 2>&1
fi
E=$CAN/merfish_z0.ome.zarr
"$PY" -m napari_gdt.cli evaluate --model "$MODEL" --expression "$E" --image "$M/dapi_z0.jpg" --region 0:1040,864:1152 \
  --tile 128 --seeds 3 --c2st --json >"$OUT/evaluate.json" 2>"$OUT/evaluate.log" &
P1=$!
"$PY" "$HERE/fig_real_vs_generated.py" --model "$MODEL" --model2 merfish-dapi --expression "$E" --image "$M/dapi_z0.jpg" \
  --within 0:1040,864:1152 --zooms 250 --out "$OUT/fig" >"$OUT/fig.log" 2>&1 &
P2=$!
rc=0
wait $P1 || { rc=1; echo "evaluate failed: see $OUT/evaluate.log" >&2; }
wait $P2 || { rc=1; echo "the figures failed: see $OUT/fig.log" >&2; }
exit $rc
