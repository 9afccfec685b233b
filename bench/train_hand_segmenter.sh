#!/usr/bin/env bash
# The shipped hand segmenter (v4.1, `unet-effnet`) from the shared data in one command, every step resumable:
#
#     bash bench/train_hand_segmenter.sh [OUT] [DATA]     # OUT: work/hand-seg, DATA: ../shared/data
#     make hand-segmenter                                  # the same, OUT=work/hand-seg
#
# Steps (docs/segmenter-v4.md "One command"); each skips what is already done, so running the command again
# after an interruption continues where it stopped (`bglab key` skips masks it wrote, `train-seg --resume`
# continues from the last finished epoch, a stage with its exported .onnx is finished):
#   1. keyed studio photos: `bglab key` (chroma) of the green-screen webcam photos
#   2. first labels for real photos: hand-grabcut (MediaPipe's box + GrabCut) on rps/sxsw
#   3. stage A: the EfficientNet-Lite0 U-Net from ImageNet weights, composited scenes + those labels, 12 epochs
#   4. teacher labels: the teacher (stage A's recipe stopped after 3 epochs, as v4 was: the longer-trained stage
#      A leaves more hands beside faces empty) on the boxes of the hands MediaPipe finds (whole photo + 2 x 2
#      tiles) on rps/sxsw and the face-mask photos
#   5. stage B: stage A trained on, half of each batch the teacher-labelled photos, lr 3e-4, 20 epochs
#   6. export: OUT/hand_unet_effnet.onnx (+ JSON model card), 320 px like the shipped file
# Needs the `train`, `pretrained` and `hands` extras (MediaPipe for steps 2 and 4). Epoch counts, not minutes,
# bound the stages, so the result does not depend on the machine's speed.
set -euo pipefail
OUT=${1:-work/hand-seg}
DATA=${2:-${BGLAB_SHARED_DATA:-../shared/data}}
BGLAB=${BGLAB:-.venv/bin/bglab}
THREADS=${THREADS:-2}
mkdir -p "$OUT"
t0=$(date +%s)
step() { echo "[$(date -u +%H:%M:%S) +$(( ($(date +%s) - t0) / 60 )) min] $*"; }

train() {  # train RUN ARGS...: a fresh run, or --resume of an unfinished one; nothing when RUN.onnx exists
    local run=$1; shift
    if [ -f "$run.onnx" ]; then step "$run: finished (its $run.onnx exists)"; return; fi
    if [ -f "$run/state.json" ]; then "$BGLAB" train-seg --out "$run" --resume "$@"
    else "$BGLAB" train-seg --out "$run" "$@"; fi
    "$BGLAB" export-seg "$run" "$run.onnx" --size 320
}

COMMON=(--keyed "$OUT/keyed" --images "$DATA/rps/webcam" --data-root "$DATA" --size 160
        --encoder efficientnet-lite0 --scenes --threads "$THREADS")

step "1. keying the studio photos"
"$BGLAB" key "$DATA/rps/webcam" "$OUT/keyed" --threads "$THREADS" --no-sheet

step "2. hand-grabcut labels for rps/sxsw"
"$BGLAB" key "$DATA/rps/sxsw" "$OUT/grabcut/sxsw" --backend hand-grabcut --entry-side none --max-border-fg 1 \
    --min-fg 0.03 --max-fg 0.9 --threads "$THREADS" --no-sheet

step "3. stage A"
train "$OUT/stageA" "${COMMON[@]}" --real-images "$DATA/rps/sxsw" --real-masks "$OUT/grabcut/sxsw" --epochs 12

step "4. teacher labels (the 3-epoch teacher on MediaPipe's boxes)"
train "$OUT/teacher" "${COMMON[@]}" --real-images "$DATA/rps/sxsw" --real-masks "$OUT/grabcut/sxsw" --epochs 3
T=(--backend unet-effnet -O "model=$OUT/teacher.onnx" -O locator=mediapipe-hands -O max_hands=4 -O tiles=2
   --entry-side none --max-border-fg 1 --max-components 8 --threads "$THREADS" --no-sheet)
"$BGLAB" key "$DATA/facemask" "$OUT/labels/facemask" "${T[@]}" --min-fg 0.0005 --max-fg 0.6
"$BGLAB" key "$DATA/rps/sxsw" "$OUT/labels/sxsw" "${T[@]}" --min-fg 0.01 --max-fg 0.9

step "5. stage B"
train "$OUT/stageB" "${COMMON[@]}" --real-images "$DATA/rps/sxsw" --real-masks "$OUT/labels/sxsw" \
    --real-images "$DATA/facemask" --real-masks "$OUT/labels/facemask" --p-real 0.5 \
    --init "$OUT/stageA/best.safetensors" --lr 3e-4 --epochs 20

step "6. export"
"$BGLAB" export-seg "$OUT/stageB" "$OUT/hand_unet_effnet.onnx" --size 320
step "done: $OUT/hand_unet_effnet.onnx ($(( ($(date +%s) - t0) / 60 )) min)"
