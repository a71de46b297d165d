#!/usr/bin/env bash
# Every acceptance figure of issue 15 for one her2st-he candidate, on held-out section C5.
#
#   NAPARI_GDT_DATA=DATA benchmarks/score_her2st.sh MODEL OUT [CANVASES]
#
# MODEL: a bundle or bundled name; OUT: a new folder for the JSON results and figures; CANVASES: the
# folder of `python -m napari_gdt.training.recipes her2st --out CANVASES` (built there when missing).
# Two lanes of one thread each: (1) `napari-gdt evaluate --json --seeds 3 --c2st --fit-baselines
# C2,C3,C4` on the whole tissue of C5; (2) depth robustness (C5 thinned to 1/15), the two what-ifs in
# benchmarks/whatif_her2st/ (tumour -> stroma transfer; knockout of 15 tumour markers in tumour),
# nearest-training-patch distances, and real | MODEL | her2st-he figures at three zooms.
# Then benchmarks/acceptance_table.py OUT prints the figures against the bars. About 10 minutes on 2
# cores. Every output shows real data: keep OUT outside the repository.
set -euo pipefail
MODEL=${1:?MODEL}; OUT=${2:?OUT}; CAN=${3:-${OUT}/canvases}
: "${NAPARI_GDT_DATA:?set NAPARI_GDT_DATA to the data folder}"
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(dirname "$HERE")
PY=${PY:-python3}
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=1
D=$NAPARI_GDT_DATA/her2st
mkdir -p "$OUT"
if [ ! -e "$CAN/her2st_C5.ome.zarr" ]; then
  "$PY" -m napari_gdt.training.recipes her2st --out "$CAN" >"$OUT/recipes.log" 2>&1
fi
C5=$CAN/her2st_C5.ome.zarr
(
  "$PY" -m napari_gdt.cli evaluate --model "$MODEL" --expression "$C5" --image "$D/C5/he.jpg" --seeds 3 --c2st \
    --fit-baselines C2,C3,C4 --json >"$OUT/evaluate.json" 2>"$OUT/evaluate.log"
) &
P1=$!
(
  "$PY" "$HERE/bench_depth.py" --model "$MODEL" --section C5 --factor 15 --json >"$OUT/depth.json" 2>"$OUT/depth.log"
  for r in transfer knockout; do
    "$PY" "$HERE/bench_whatif.py" --model "$MODEL" --expression "$C5" --recipe "$HERE/whatif_her2st/$r.json" --seeds 3 \
      --json >"$OUT/whatif_$r.json" 2>"$OUT/whatif_$r.log"
  done
  tr=()
  for s in C2 C3 C4; do tr+=(--train-image "$D/$s/he.jpg" --train-expression "$CAN/her2st_$s.ome.zarr"); done
  "$PY" "$HERE/bench_memorisation.py" --model "$MODEL" "${tr[@]}" --image "$D/C5/he.jpg" --expression "$C5" \
    >"$OUT/memorisation.json" 2>"$OUT/memorisation.log"
  "$PY" "$HERE/fig_real_vs_generated.py" --model "$MODEL" --model2 her2st-he --expression "$C5" --image "$D/C5/he.jpg" \
    --out "$OUT/fig" >"$OUT/fig.log" 2>&1
) &
P2=$!
rc=0
wait $P1 || { rc=1; echo "evaluate failed: see $OUT/evaluate.log" >&2; }
wait $P2 || { rc=1; echo "a benchmark failed: see $OUT/*.log" >&2; }
exit $rc
