#!/usr/bin/env bash
# The paper's WMT'14 EN-DE runs (Transformer base), and the BLEU-vs-sparsity sweep over them.
#
#   train.sh RECIPE DATA_BIN SAVE_DIR [extra fairseq-train args...]
#       RECIPE: baseline  no TD (transformer_td with --td-type none: the stock Transformer)
#               td_75     weight TD, alpha .66, gamma .75
#               td_90     weight TD, alpha .66, gamma .90
#               ramping   weight TD ramped to gamma .95, alpha .99 (--td-ramp-updates, --td-eval-mask)
#               unit      unit TD, alpha .5, gamma .5
#   train.sh sweep DATA CHECKPOINTS [extra bleu_vs_sparsity.py args...]
#       DATA is prepare.sh's --dest; CHECKPOINTS/RECIPE/checkpoint_best.pt for the five recipes;
#       writes CHECKPOINTS/sweep/results.{csv,json} and bleu_vs_sparsity.png.
#
# Extra args come last, so they override the recipe's (e.g. --max-update, --save-interval-updates).
# Environment: PYTHON (default: the repo's .venv/bin/python when there is one, else python;
# fairseq-train is taken from beside it), NGPU (default: the GPUs torch sees; --fp16 and the
# update frequency follow from it), RAMP_UPDATES (default 20000), CHECKPOINT (default
# checkpoint_best.pt, for sweep), DRY_RUN=1 prints the command instead of running it.
set -euo pipefail

PROG=train.sh
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ -z "${PYTHON:-}" ] && [ -x "$REPO/.venv/bin/python" ]; then PYTHON=$REPO/.venv/bin/python; fi
PY=${PYTHON:-python}
RECIPES=(baseline td_75 td_90 ramping unit)

die() { echo "$PROG: error: $*" >&2; exit 1; }
usage_error() {
  local IFS='|'
  echo "$PROG: error: $* (usage: $PROG {${RECIPES[*]}|sweep} DATA_BIN SAVE_DIR [extra args...])" >&2
  exit 2
}

check_python() {
  "$PY" -c 'import td_fairseq' 2> /dev/null ||
    die "'$PY' cannot import td_fairseq; set PYTHON to the interpreter that has it"
}

run() {  # print the command; run it unless DRY_RUN=1
  printf '%q ' "$@"; echo
  if [ "${DRY_RUN:-0}" != 1 ]; then "$@"; fi
}

td_args() {  # the targeted-dropout options of a recipe
  case $1 in
    baseline) echo "--td-type none" ;;
    td_75) echo "--td-type weight --td-alpha 0.66 --td-gamma 0.75" ;;
    td_90) echo "--td-type weight --td-alpha 0.66 --td-gamma 0.90" ;;
    ramping) echo "--td-type weight --td-alpha 0.99 --td-gamma 0.95 --td-ramp-updates ${RAMP_UPDATES:-20000} --td-eval-mask" ;;
    unit) echo "--td-type unit --td-alpha 0.5 --td-gamma 0.5" ;;
    *) return 1 ;;
  esac
}

train() {  # train RECIPE DATA_BIN SAVE_DIR [extra...]
  local recipe=$1 data_bin=$2 save_dir=$3 ngpu update_freq fairseq_train td
  shift 3
  [ -f "$data_bin/dict.en.txt" ] || die "$data_bin is not a data-bin (no dict.en.txt); run prepare.sh first"
  check_python
  ngpu=${NGPU:-$("$PY" -c 'import torch; print(torch.cuda.device_count())' 2> /dev/null || echo 0)}
  [[ $ngpu =~ ^[0-9]+$ ]] || die "NGPU must be a number, not '$ngpu'"
  # 4096 tokens x 8 GPUs ~ 25k real (unpadded) source and target tokens per update, as in
  # Vaswani et al.; fewer GPUs accumulate gradients to keep that batch
  update_freq=$(( ngpu > 0 ? (8 + ngpu - 1) / ngpu : 8 ))
  fairseq_train=$(dirname "$(command -v "$PY")")/fairseq-train
  [ -x "$fairseq_train" ] || fairseq_train=fairseq-train
  td=$(td_args "$recipe")
  local args=(
    "$data_bin" --save-dir "$save_dir"
    --user-dir "$REPO/td_fairseq" --task translation --source-lang en --target-lang de
    --arch transformer_td_wmt_en_de --share-all-embeddings
    --optimizer adam --adam-betas "(0.9, 0.98)" --clip-norm 0.0 --weight-decay 0.0
    --lr 7e-4 --lr-scheduler inverse_sqrt --warmup-updates 4000 --warmup-init-lr 1e-07
    --criterion label_smoothed_cross_entropy_td --label-smoothing 0.1 --dropout 0.1
    --max-tokens 4096 --update-freq "$update_freq" --max-update 100000
    --no-epoch-checkpoints --save-interval-updates 10000 --keep-interval-updates 1
    --seed 1 --log-format simple --log-interval 100
  )
  if [ "$ngpu" -gt 0 ]; then args+=(--fp16); fi
  # shellcheck disable=SC2206  # td_args is a fixed list of plain words
  args+=($td "$@")
  run "$fairseq_train" "${args[@]}"
}

sweep() {  # sweep DATA CHECKPOINTS [extra...]
  local data=$1 root=$2 recipe checkpoint list=()
  shift 2
  for file in bin/dict.en.txt spm.model clean/test.de; do
    [ -f "$data/$file" ] || die "$data/$file not found; DATA is prepare.sh's --dest"
  done
  check_python
  for recipe in "${RECIPES[@]}"; do
    checkpoint=$root/$recipe/${CHECKPOINT:-checkpoint_best.pt}
    [ -f "$checkpoint" ] || die "no checkpoint $checkpoint; train recipe $recipe first"
    list+=(--checkpoint "$checkpoint" --label "$recipe")
  done
  # beam 4 and length penalty 0.6 as for the base Transformer; the output-length bound keeps
  # broken (heavily pruned) models from decoding to 200 tokens, and is recorded in the results
  run "$PY" "$REPO/scripts/bleu_vs_sparsity.py" --data-bin "$data/bin" "${list[@]}" \
    --sparsity 0 0.5 0.6 0.7 0.8 0.9 --mode weight --scope unit --beam 4 --lenpen 0.6 \
    --max-len-a 1.5 --max-len-b 10 --spm "$data/spm.model" --ref "$data/clean/test.de" \
    --reference-label baseline --out "$root/sweep" "$@"
}

[ $# -ge 1 ] || usage_error "no recipe given"
case $1 in
  -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; exit 0 ;;
  sweep) [ $# -ge 3 ] || usage_error "sweep needs DATA and CHECKPOINTS"; shift; sweep "$@" ;;
  *)
    td_args "$1" > /dev/null || usage_error "unknown recipe '$1'"
    [ $# -ge 3 ] || usage_error "$1 needs DATA_BIN and SAVE_DIR"
    train "$@" ;;
esac
