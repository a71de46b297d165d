#!/usr/bin/env bash
# Generator v2 (issue 15) on a CUDA machine: both bundled models from scratch, side by side on one GPU.
#
#   OUT=DIR NAPARI_GDT_DATA=DATA [TL=min] [BS=batch] [DEVICE=cuda] [AMP=bf16] scripts/gpu_train_v2.sh
#
# Builds the training canvases from the shared data (training.recipes), then trains `her2st-he`
# (C2-C4, validation region on C2; C5 is never read) and `merfish-dapi` (the held-out quarter is
# excluded) for TL minutes each, at the same time. Writes OUT/<name>.safetensors, the resumable
# checkpoints OUT/<name>.ckpt/ (last.pt, a bundle every 2000 steps for selection on the validation
# region) and OUT/<name>.log. Resume: the same command with RESUME=1 (the canvases are rebuilt).
# Settings are version 3's recipe (docs/training.md) with what a GPU affords: a batch of BS windows,
# larger patches and a wider three-scale discriminator. HE_EXTRA / MF_EXTRA: more `train` options for
# either run (e.g. MF_EXTRA="--lambda-nuc 20"). HE_INIT=her2st-he (or a bundle) fine-tunes that gdt-v2 model
# instead of training her2st-he from scratch (fresh discriminator; its architecture). Nothing here writes
# into the repository.
set -euo pipefail
: "${OUT:?set OUT to an output folder}"
: "${NAPARI_GDT_DATA:?set NAPARI_GDT_DATA to the shared data folder}"
TL=${TL:-7}
BS=${BS:-32}
DEVICE=${DEVICE:-cuda}
AMP=${AMP:-bf16}
PY=${PY:-python3}
W=${WORK:-/tmp/gdt-gpu-canvases}
mkdir -p "$W" "$OUT"
"$PY" -m napari_gdt.training.recipes her2st --out "$W" >"$OUT/recipes.log" 2>&1
"$PY" -m napari_gdt.training.recipes merfish --out "$W" >>"$OUT/recipes.log" 2>&1

common=(--device "$DEVICE" --amp "$AMP" --no-eval --time-limit "$TL" --steps 1000000
  --ckpt-every 500 --keep-every 2000 --batch-size "$BS" --arch gdt-v2)
resume() { if [ "${RESUME:-0}" = 1 ]; then echo --resume "$OUT/$1.ckpt/last.pt"; fi; }

H=$NAPARI_GDT_DATA/her2st
# shellcheck disable=SC2046,SC2086
he_start=(--arch-config '{"depth_window": 1, "struct_strides": [1, 1, 4, 4]}')
if [ -n "${HE_INIT:-}" ] && [ "${RESUME:-0}" != 1 ]; then he_start=(--init-from "$HE_INIT"); fi
"$PY" -m napari_gdt.cli train "${common[@]}" $(resume her2st-he) "${he_start[@]}" \
  --image "$H/C2/he.jpg" --expression "$W/her2st_C2.ome.zarr" \
  --image "$H/C3/he.jpg" --expression "$W/her2st_C3.ome.zarr" \
  --image "$H/C4/he.jpg" --expression "$W/her2st_C4.ome.zarr" \
  --val-region 3200:3840,2560:3360 --out "$OUT/her2st-he.safetensors" --name her2st-he \
  --patch-bins 26 --lr 5e-4 --beta1 0.5 --clip-grad 5 --lambda-rec 10 --rec-pool 64 --lambda-hem 20 \
  --d-scales 3 --d-ch 64 --r1-gamma 1 --depth-aug 0.5 ${HE_EXTRA:-} >"$OUT/her2st-he.log" 2>&1 &
P1=$!

M=$NAPARI_GDT_DATA/merfish_mouse_brain
# shellcheck disable=SC2046,SC2086
"$PY" -m napari_gdt.cli train "${common[@]}" $(resume merfish-dapi) \
  --arch-config '{"struct_strides": [1, 1, 4, 4], "abs_depth": true}' \
  --image "$M/dapi_z0.jpg" --expression "$W/merfish_z0.ome.zarr" \
  --val-region 0:1040,864:1152 --out "$OUT/merfish-dapi.safetensors" --name merfish-dapi \
  --patch-bins 20 --lr 5e-4 --beta1 0.5 --clip-grad 5 --lambda-rec 10 --rec-pool 16 \
  --d-scales 3 --d-ch 64 --r1-gamma 1 ${MF_EXTRA:-} >"$OUT/merfish-dapi.log" 2>&1 &
P2=$!

rc=0
wait $P1 || rc=1
wait $P2 || rc=1
tail -n 3 "$OUT/her2st-he.log" "$OUT/merfish-dapi.log"
exit $rc
