#!/usr/bin/env bash
# Issue #13's table at the 650-update budget: no_td and td pruned by magnitude, Wanda and SparseGPT
# (row and block mask groups), unstructured 50-95 % and 2:4, plus no_td pruned by magnitude then
# fine-tuned with frozen masks (10 % of the training updates) at 80 and 90 %, and, when OUT has
# one, a model trained with TD's 2:4 pattern (label td_2_4) pruned to 2:4 by each pruner.
#
#   bash benchmarks/multi30k_pruners.sh OUT     (OUT holds data/ and checkpoints/{no_td,td}/ as
#                                                benchmarks/multi30k.sh writes them)
# Rows go to OUT/sweeps/pruners (one folder: same data, subset, reference and decoding for all);
# the report (benchmarks/multi30k_report.py: tables, the best one-shot row per level, each
# pruner's cost, plots) goes to DOCS (default OUT/report).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: multi30k_pruners.sh OUT}
PY=${PYTHON:-.venv/bin/python}
FT_UPDATES=${FT_UPDATES:-65}
LABELS=${LABELS:-no_td td}   # models to sweep; LEVELS: unstructured levels (default 0.5 ... 0.95)
FINETUNE=${FINETUNE:-1}      # 0 skips the fine-tune rows; FT_LEVELS: their levels (default 0.8 0.9)
SWEEP=(--data-bin "$OUT/data/bin" --beam 4 --max-len-a 1.2 --max-len-b 10 --spm "$OUT/data/spm.model"
  --ref "$OUT/data/clean/test.de" --no-progress --reference-label no_td --out "$OUT/sweeps/pruners")
read -r -a LEVELS <<< "${LEVELS:-0.5 0.6 0.7 0.8 0.9 0.95}"
mkdir -p "$OUT/sweeps"
sweep() {
  "$PY" scripts/bleu_vs_sparsity.py "${SWEEP[@]}" "$@" >> "$OUT/sweeps/pruners.log" 2>&1 ||
    { echo "multi30k_pruners.sh: error: a sweep failed (see $OUT/sweeps/pruners.log)" >&2; exit 1; }
}
for label in $LABELS; do
  until [ -f "$OUT/checkpoints/$label/done" ]; do sleep 20; done  # a training still running
  ckpt=(--checkpoint "$OUT/checkpoints/$label/checkpoint_last.pt" --label "$label")
  sweep "${ckpt[@]}" --sparsity 0 "${LEVELS[@]}"
  sweep "${ckpt[@]}" --pattern 2:4 --sparsity 0.5
  for pruner in wanda sparsegpt; do
    sweep "${ckpt[@]}" --pruner "$pruner" --sparsity "${LEVELS[@]}"
    sweep "${ckpt[@]}" --pruner "$pruner" --pattern 2:4 --sparsity 0.5
  done
done
# a model trained with a 2:4 TD pattern (LABELS="td_2_4" bash benchmarks/multi30k.sh OUT), if there is one
if [ -f "$OUT/checkpoints/td_2_4/done" ]; then
  ckpt=(--checkpoint "$OUT/checkpoints/td_2_4/checkpoint_last.pt" --label td_2_4)
  sweep "${ckpt[@]}" --sparsity 0
  for pruner in magnitude wanda sparsegpt; do sweep "${ckpt[@]}" --pruner "$pruner" --pattern 2:4 --sparsity 0.5; done
fi
for label in $LABELS; do  # the paper's block masks after every row-mask row (least needed first to go)
  sweep --checkpoint "$OUT/checkpoints/$label/checkpoint_last.pt" --label "$label" --pruner sparsegpt \
    --mask-groups block --sparsity "${LEVELS[@]}"
done
for level in $([ "$FINETUNE" = 1 ] && echo "${FT_LEVELS:-0.8 0.9}"); do  # prune no_td, then fine-tune with the pruned entries frozen at zero
  name=no_td_ft${level#0.}0
  dir="$OUT/checkpoints/$name"
  if [ ! -f "$dir/done" ]; then
    "$PY" scripts/prune_checkpoint.py "$OUT/checkpoints/no_td/checkpoint_last.pt" --sparsity "$level" \
      --out-dir "$dir/pruned" > /dev/null
    "$PY" -m fairseq_cli.train "$OUT/data/bin" --user-dir td_fairseq --task translation --arch transformer_td \
      --share-all-embeddings --encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256 \
      --encoder-ffn-embed-dim 512 --decoder-ffn-embed-dim 512 --encoder-attention-heads 4 --decoder-attention-heads 4 \
      --dropout 0.3 --criterion label_smoothed_cross_entropy_td --label-smoothing 0.1 --optimizer adam \
      --adam-betas "(0.9, 0.98)" --lr 5e-4 --lr-scheduler inverse_sqrt --warmup-updates 6 --max-tokens 4096 \
      --seed 1 --num-workers 0 --no-epoch-checkpoints --log-format simple --log-interval 10 --cpu \
      --td-type none --freeze-mask --finetune-from-model "$dir/pruned/sparsity_$(printf %.2f "$level").pt" \
      --max-update "$FT_UPDATES" --save-dir "$dir" > "$dir/train.log" 2>&1 ||
      { echo "multi30k_pruners.sh: error: fine-tuning $name failed (see $dir/train.log)" >&2; exit 1; }
    printf '{"from": "no_td pruned by magnitude to %s", "updates": %s, "lr": 5e-4, "frozen_mask": true}\n' \
      "$level" "$FT_UPDATES" > "$dir/finetune.json"
    touch "$dir/done"
  fi
  sweep --checkpoint "$dir/checkpoint_last.pt" --label "$name" --sparsity 0
done
"$PY" benchmarks/multi30k_report.py "$OUT" --docs "${DOCS:-$OUT/report}"
