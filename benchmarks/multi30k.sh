#!/usr/bin/env bash
# Real-data benchmark: five models on Multi30k EN-DE, then BLEU against sparsity.
#
#   bash benchmarks/multi30k.sh [OUT_DIR]        (default out/multi30k)
#
# Reads ../shared/data/multi30k (train, val; reports on test_2016_flickr; the 2017 and
# 2018 test sets are never touched). Each stage is skipped when its output exists.
# UPDATES (default 2000) and HOURS (a wall-clock cap per model, default 0.25) size training;
# LABELS (default: all five) picks the models.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/multi30k}
DATA=${MULTI30K:-../shared/data/multi30k}
PY=${PYTHON:-.venv/bin/python}
BIN=$(dirname "$PY")
UPDATES=${UPDATES:-2000}
HOURS=${HOURS:-0.25}
[ -f "$DATA/train.en" ] || { echo "multi30k.sh: error: no Multi30k at $DATA" >&2; exit 1; }

mkdir -p "$OUT/raw"
for pair in train:train valid:val test:test_2016_flickr; do
  for lang in en de; do ln -sf "$(realpath "$DATA/${pair#*:}.$lang")" "$OUT/raw/${pair%%:*}.$lang"; done
done
"$PY" scripts/prepare_data.py --raw-dir "$OUT/raw" --dest "$OUT/data" --vocab-size 8000

COMMON=(--user-dir td_fairseq --task translation --arch transformer_td --share-all-embeddings
  --encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256
  --encoder-ffn-embed-dim 512 --decoder-ffn-embed-dim 512 --encoder-attention-heads 4 --decoder-attention-heads 4
  --dropout 0.3 --criterion label_smoothed_cross_entropy_td --label-smoothing 0.1
  --optimizer adam --adam-betas "(0.9, 0.98)" --lr 1e-3 --lr-scheduler inverse_sqrt --warmup-updates 400
  --max-tokens 4096 --cpu --seed 1 --num-workers 0 --no-epoch-checkpoints --log-format simple --log-interval 50
  --max-update "$UPDATES" --stop-time-hours "$HOURS")
RAMP=$((UPDATES / 5))
declare -A TD=(
  [no_td]="--td-type none"
  [td]="--td-type weight --td-gamma 0.75 --td-alpha 0.66"
  [ramping_td_90]="--td-type weight --td-gamma 0.90 --td-alpha 0.99 --td-ramp-updates $RAMP --td-eval-mask"
  [ramping_td_95]="--td-type weight --td-gamma 0.95 --td-alpha 0.99 --td-ramp-updates $RAMP --td-eval-mask"
  [unit_td]="--td-type unit --td-gamma 0.5 --td-alpha 0.5"
)
read -r -a LABELS <<< "${LABELS:-no_td td ramping_td_90 ramping_td_95 unit_td}"
for label in "${LABELS[@]}"; do
  dir="$OUT/checkpoints/$label"
  if [ -f "$dir/done" ]; then continue; fi
  mkdir -p "$dir"
  echo "train $label: ${TD[$label]}"
  # shellcheck disable=SC2086
  "$BIN/fairseq-train" "$OUT/data/bin" "${COMMON[@]}" ${TD[$label]} --save-dir "$dir" > "$dir/train.log" 2>&1
  touch "$dir/done"
done

CKPTS=(); NAMES=()
for label in "${LABELS[@]}"; do CKPTS+=(--checkpoint "$OUT/checkpoints/$label/checkpoint_last.pt"); NAMES+=(--label "$label"); done
SWEEP=(--data-bin "$OUT/data/bin" --beam 4 --max-len-a 1.2 --max-len-b 10 --spm "$OUT/data/spm.model"
  --ref "$OUT/data/clean/test.de" --reference-label no_td --no-progress)
"$PY" scripts/bleu_vs_sparsity.py "${SWEEP[@]}" "${CKPTS[@]}" "${NAMES[@]}" \
  --sparsity 0 0.5 0.6 0.7 0.8 0.9 0.95 --mode weight --scope unit --out "$OUT/sweep_weight"
if [ -f "$OUT/checkpoints/unit_td/done" ]; then
  "$PY" scripts/bleu_vs_sparsity.py "${SWEEP[@]}" --checkpoint "$OUT/checkpoints/no_td/checkpoint_last.pt" \
    --label no_td --checkpoint "$OUT/checkpoints/unit_td/checkpoint_last.pt" --label unit_td \
    --sparsity 0 0.1 0.2 0.3 0.4 0.5 0.6 0.7 --mode unit --out "$OUT/sweep_unit"
fi
