#!/usr/bin/env bash
# Real-data benchmark: TD and the baselines on Multi30k EN-DE, then BLEU against sparsity.
# This is the 650-update run of docs/RESULTS.md sections 6 and 8, one seed, untuned baselines;
# the converged study (sizing, recipe and coefficients on val, seeds) is multi30k_study.py.
#
#   bash benchmarks/multi30k.sh [OUT_DIR]        (default out/multi30k)
#
# Reads ../shared/data/multi30k (train, val; reports on test_2016_flickr; the 2017 and
# 2018 test sets are never touched). Each stage is skipped when its output exists.
# Environment:
#   VOCAB     sentencepiece vocabulary (default 8000)
#   UPDATES   updates per model (default 650: what 15 minutes buy on 2 CPU cores)
#   HOURS     wall-clock cap per model (default 0.25)
#   LABELS    models to train and sweep (default: all below)
#   RAMPS     candidate ramp lengths for ramping TD, tuned on val (default UPDATES/5)
#   DEVICE    cpu (default) or cuda
#   PARALLEL  models (each: train, then sweep) in flight at once (default 1)
#   UNIT_SWEEP_DEVICE  where unit sweeps decode (default: as DEVICE); SWEEP_TOKENS (default 4000)
# Ramping TD: each candidate ramp R trains as <label>@R; the one with the lowest final
# validation loss (computed with --td-eval-mask) becomes <label>; the choice is written to
# OUT/tuning.txt. Each model is swept as soon as it is trained: weight pruning for all,
# also by the method's own score for l0 and variational, and unit pruning for the unit
# methods and no_td. The report (tables, merged CSV, plots) is benchmarks/multi30k_report.py.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/multi30k}
DATA=${MULTI30K:-../shared/data/multi30k}
PY=${PYTHON:-.venv/bin/python}
UPDATES=${UPDATES:-650}
HOURS=${HOURS:-0.25}
DEVICE=${DEVICE:-cpu}
PARALLEL=${PARALLEL:-1}
RAMPS=${RAMPS:-$((UPDATES / 5))}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$([ "$PARALLEL" -gt 1 ] && echo 1 || nproc)}

COMMON=(--user-dir td_fairseq --task translation --arch transformer_td --share-all-embeddings
  --encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256
  --encoder-ffn-embed-dim 512 --decoder-ffn-embed-dim 512 --encoder-attention-heads 4 --decoder-attention-heads 4
  --dropout 0.3 --criterion label_smoothed_cross_entropy_td --label-smoothing 0.1
  --optimizer adam --adam-betas "(0.9, 0.98)" --lr 1e-3 --lr-scheduler inverse_sqrt --warmup-updates 400
  --max-tokens 4096 --seed 1 --num-workers 0 --no-epoch-checkpoints --log-format simple --log-interval 50
  --max-update "$UPDATES" --stop-time-hours "$HOURS")
[ "$DEVICE" = cpu ] && COMMON+=(--cpu)
GMP_START=$((UPDATES / 5)); GMP_INTERVAL=$((UPDATES / 26 > 0 ? UPDATES / 26 : 1))
declare -A RECIPE=(
  [no_td]="--td-type none"
  [td]="--td-type weight --td-gamma 0.75 --td-alpha 0.66"
  [td_2_4]="--td-type weight --td-pattern 2:4 --td-gamma 0.5 --td-alpha 0.66"
  [ramping_td_90]="--td-type weight --td-gamma 0.90 --td-alpha 0.99 --td-eval-mask"
  [ramping_td_95]="--td-type weight --td-gamma 0.95 --td-alpha 0.99 --td-eval-mask"
  [unit_td]="--td-type unit --td-gamma 0.5 --td-alpha 0.5"
  [random_td]="--td-type weight_random --td-gamma 0.75 --td-alpha 0.66"
  [dropout]="--sparsity-method dropout --drop-rate 0.495"
  [unit_dropout]="--sparsity-method unit_dropout --drop-rate 0.25"
  [l1]="--sparsity-method l1 --l1-coef 1e-5"
  [l0]="--sparsity-method l0 --l0-form weight --l0-coef 1e-6"
  [variational]="--sparsity-method variational --vd-coef 1e-6"
  [smallify]="--sparsity-method smallify --smallify-coef 1e-4"
  [gmp]="--sparsity-method gmp --gmp-sparsity 0.9 --gmp-start $GMP_START --gmp-interval $GMP_INTERVAL --gmp-steps 13"
)
ALL="no_td td ramping_td_90 ramping_td_95 unit_td random_td dropout unit_dropout l1 l0 variational smallify gmp"
read -r -a LABELS <<< "${LABELS:-$ALL}"
read -r -a RAMP_LIST <<< "$RAMPS"
for label in "${LABELS[@]}"; do
  [ -n "${RECIPE[$label]:-}" ] || { echo "multi30k.sh: error: unknown label $label" >&2; exit 1; }
done

if [ ! -f "$OUT/data/bin/dict.en.txt" ]; then
  [ -f "$DATA/train.en" ] || { echo "multi30k.sh: error: no Multi30k at $DATA" >&2; exit 1; }
  mkdir -p "$OUT/raw"
  for pair in train:train valid:val test:test_2016_flickr; do
    for lang in en de; do ln -sf "$(realpath "$DATA/${pair#*:}.$lang")" "$OUT/raw/${pair%%:*}.$lang"; done
  done
  "$PY" scripts/prepare_data.py --raw-dir "$OUT/raw" --dest "$OUT/data" --vocab-size "${VOCAB:-8000}"
fi

train() {  # train LABEL RUN_NAME EXTRA...
  local label=$1 run=$2 dir="$OUT/checkpoints/$2"; shift 2
  [ -f "$dir/done" ] && return 0
  mkdir -p "$dir"
  echo "train $run: ${RECIPE[$label]} $*"
  # shellcheck disable=SC2086
  if "$PY" -m fairseq_cli.train "$OUT/data/bin" "${COMMON[@]}" ${RECIPE[$label]} "$@" --save-dir "$dir" \
      > "$dir/train.log" 2>&1; then touch "$dir/done"; else echo "train $run: FAILED (see $dir/train.log)" >&2; fi
}

final_valid_loss() {  # the last "valid on 'valid' subset" loss of a training log
  { grep -o "valid on 'valid' subset | loss [0-9.]*" "$1" || true; } | tail -1 | awk '{print $NF}'
}

train_ramping() {  # every candidate ramp, then the lowest final validation loss wins
  local label=$1 ramp best="" best_loss="" loss
  for ramp in "${RAMP_LIST[@]}"; do
    if [ "$PARALLEL" -gt 1 ]; then train "$label" "$label@$ramp" --td-ramp-updates "$ramp" &
    else train "$label" "$label@$ramp" --td-ramp-updates "$ramp"; fi
  done
  wait
  for ramp in "${RAMP_LIST[@]}"; do
    [ -f "$OUT/checkpoints/$label@$ramp/done" ] || continue
    loss=$(final_valid_loss "$OUT/checkpoints/$label@$ramp/train.log")
    echo "$label ramp $ramp: final valid loss (eval mask) ${loss:-none}" >> "$OUT/tuning.txt"
    if [ -n "$loss" ] && { [ -z "$best" ] || awk "BEGIN{exit !($loss < $best_loss)}"; }; then
      best=$ramp; best_loss=$loss
    fi
  done
  [ -n "$best" ] || return 0
  echo "$label: chose ramp $best" >> "$OUT/tuning.txt"
  ln -sfn "$label@$best" "$OUT/checkpoints/$label"
}

SWEEP=(--data-bin "$OUT/data/bin" --beam 4 --max-len-a 1.2 --max-len-b 10 --spm "$OUT/data/spm.model"
  --ref "$OUT/data/clean/test.de" --no-progress --max-tokens "${SWEEP_TOKENS:-4000}")
WEIGHT_LEVELS=(--sparsity 0 0.5 0.6 0.7 0.8 0.9 0.95 --mode weight --scope unit)
UNIT_LEVELS=(--sparsity 0 0.1 0.2 0.3 0.4 0.5 0.6 0.7 --mode unit --score own)
sweep() {  # sweep LABEL NAME DEVICE ARGS...: one label's rows in OUT/sweeps/NAME
  local label=$1 name=$2 device=$3; shift 3
  "$PY" scripts/bleu_vs_sparsity.py "${SWEEP[@]}" --device "$device" --label "$label" "$@" \
    --checkpoint "$OUT/checkpoints/$label/checkpoint_last.pt" --out "$OUT/sweeps/$name" \
    > "$OUT/sweeps/$name.log" 2>&1 || echo "sweep $name: FAILED (see $OUT/sweeps/$name.log)" >&2
}

pipeline() {  # train one label (all ramp candidates for ramping TD), then its sweeps
  local label=$1
  if [[ $label == ramping_* ]]; then train_ramping "$label"; else train "$label" "$label"; fi
  [ -f "$OUT/checkpoints/$label/done" ] || return 0
  case $label in
    no_td|unit_td|unit_dropout|smallify) sweep "$label" "unit_$label" "${UNIT_SWEEP_DEVICE:-$DEVICE}" "${UNIT_LEVELS[@]}" & ;;
  esac
  sweep "$label" "weight_$label" "$DEVICE" "${WEIGHT_LEVELS[@]}"
  case $label in
    l0|variational) sweep "$label" "weight_own_$label" "$DEVICE" "${WEIGHT_LEVELS[@]}" --score own ;;
  esac
  wait
}

mkdir -p "$OUT/checkpoints" "$OUT/sweeps"
for label in "${LABELS[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do sleep 1; done
  pipeline "$label" &
done
wait
