#!/usr/bin/env bash
# WMT'14 English -> German: raw text -> joint sentencepiece -> fairseq data-bin.
#
#   prepare.sh [--raw-dir DIR] --dest DIR [--vocab-size 32000] [--workers 1]
#
# Leaves DEST/bin (data-bin), DEST/spm.model and DEST/clean/test.de (the raw reference).
# With --raw-dir, DIR holds train, valid and test in .en and .de, one sentence a line.
# Without it, the standard WMT'14 corpora are fetched and assembled into DEST/raw:
#   train  Europarl v7 + Common Crawl + News Commentary v9 (the corpora of fairseq's
#          prepare-wmt14en2de.sh --icml17, about 4.5 M pairs), downloaded into DEST/downloads
#          (each archive moved into place only when complete)
#   valid  newstest2013 and test newstest2014 "full" (3003 sentences), both from sacreBLEU
#          (`sacrebleu -t wmt13|wmt14/full -l en-de --echo src|ref`): its download, its SGM
#          extraction, so DEST/clean/test.de is exactly sacreBLEU's wmt14/full reference.
#          sacreBLEU keeps them in $SACREBLEU (default here: DEST/downloads/sacrebleu).
# Every stage is skipped when its output exists: a rerun resumes, and is a no-op once done.
# PYTHON is the interpreter that has td_fairseq, fairseq and sacrebleu installed (default:
# the repo's .venv/bin/python when there is one, else python).
set -euo pipefail

PROG=prepare.sh
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ -z "${PYTHON:-}" ] && [ -x "$REPO/.venv/bin/python" ]; then PYTHON=$REPO/.venv/bin/python; fi
PY=${PYTHON:-python}

die() { echo "$PROG: error: $*" >&2; exit 1; }
usage_error() { echo "$PROG: error: $* (usage: $PROG [--raw-dir DIR] --dest DIR [--vocab-size N] [--workers N])" >&2; exit 2; }

RAW_DIR= DEST= VOCAB=32000 WORKERS=1
while [ $# -gt 0 ]; do
  case $1 in
    --raw-dir|--dest|--vocab-size|--workers)
      [ $# -ge 2 ] || usage_error "$1 needs a value"
      case $1 in
        --raw-dir) RAW_DIR=$2 ;; --dest) DEST=$2 ;; --vocab-size) VOCAB=$2 ;; --workers) WORKERS=$2 ;;
      esac
      shift 2 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) usage_error "unknown option $1" ;;
  esac
done
[ -n "$DEST" ] || usage_error "--dest is required"
[[ $VOCAB =~ ^[1-9][0-9]*$ ]] || usage_error "--vocab-size must be a positive integer, not '$VOCAB'"
[[ $WORKERS =~ ^[1-9][0-9]*$ ]] || usage_error "--workers must be a positive integer, not '$WORKERS'"
if [ -n "$RAW_DIR" ] && [ ! -d "$RAW_DIR" ]; then die "raw dir $RAW_DIR does not exist"; fi
if [ -e "$DEST" ] && [ ! -d "$DEST" ]; then die "--dest $DEST exists and is not a directory"; fi
command -v "$PY" > /dev/null || die "no python '$PY'; set PYTHON to the interpreter that has td_fairseq"
# td_fairseq is found, not imported: importing it loads torch, seconds on a busy machine
"$PY" -c 'import importlib.util, sys, sentencepiece, sacrebleu; sys.exit(not importlib.util.find_spec("td_fairseq"))' 2> /dev/null ||
  die "$PY cannot import td_fairseq, sentencepiece and sacrebleu; set PYTHON to the interpreter that has them"

# Same training corpora as fairseq's examples/translation/prepare-wmt14en2de.sh (--icml17),
# over https; beside each archive, the tar pattern of the files we take from it.
URLS=(
  https://statmt.org/wmt13/training-parallel-europarl-v7.tgz
  https://statmt.org/wmt13/training-parallel-commoncrawl.tgz
  https://statmt.org/wmt14/training-parallel-nc-v9.tgz
)
MEMBERS=('*europarl-v7.de-en.*' '*commoncrawl.de-en.*' '*news-commentary-v9.de-en.*')
TRAIN_CORPORA=(europarl-v7.de-en commoncrawl.de-en news-commentary-v9.de-en)
# valid and test: sacreBLEU's test sets (it downloads and unpacks their SGM files itself)
TEST_SETS=(valid:wmt13 test:wmt14/full)
export SACREBLEU=${SACREBLEU:-$DEST/downloads/sacrebleu}
OFFLINE="cannot download WMT'14 (offline?); pass --raw-dir with local files"

TMP_DIRS=()
cleanup() { for dir in "${TMP_DIRS[@]}"; do rm -rf "$dir"; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM

probe() {  # is the first server reachable at all? (no status check: only connectivity)
  if command -v curl > /dev/null; then
    curl -sS -o /dev/null -I --connect-timeout 10 --max-time 20 "$1" 2> /dev/null
  elif command -v wget > /dev/null; then
    wget -q --spider --timeout=10 --tries=1 "$1" 2> /dev/null
  else
    die "cannot download WMT'14 (no curl or wget); pass --raw-dir with local files"
  fi
}

fetch() {  # fetch URL OUT: write OUT only once the whole file has arrived
  local tmp
  tmp=$(mktemp -d "$(dirname "$2")/.tmp-download.XXXXXX")
  TMP_DIRS+=("$tmp")
  echo "download: $1"
  if command -v curl > /dev/null; then
    curl -fsSL --connect-timeout 20 --retry 3 -o "$tmp/file" "$1" 2> "$tmp/log" ||
      die "cannot download $1: $(tail -n 1 "$tmp/log")"
  else
    wget -q --timeout=20 --tries=3 -O "$tmp/file" "$1" 2> "$tmp/log" || die "cannot download $1 (wget failed)"
  fi
  mv "$tmp/file" "$2"
  rm -rf "$tmp"
}

one_file() {  # one_file DIR NAME: the single file called NAME under DIR
  local found
  found=$(find "$1" -type f -name "$2" -print -quit)
  [ -n "$found" ] || die "archive content changed: no $2 found"
  echo "$found"
}

sacrebleu_side() {  # sacrebleu_side TEST_SET SIDE OUT: one side (src or ref) of an en-de test set
  "$PY" -m sacrebleu -t "$1" -l en-de --echo "$2" > "$3" 2> "$3.log" ||
    die "sacrebleu cannot give $1 en-de $2 (offline? it downloads into $SACREBLEU): $(grep -v '^\s*$' "$3.log" | tail -n 1)"
  rm -f "$3.log"
}

plain_lines() {  # concatenate files, one line each, every file newline-terminated; a stray
  # carriage return would split a line in Python's universal newlines: make it a space
  awk '{ gsub(/\r/, " "); print }' "$@"
}

assemble_wmt14() {  # DEST/downloads/*.tgz and sacreBLEU's test sets -> DEST/raw/{train,valid,test}.{en,de}
  local downloads=$DEST/downloads missing=() i url archive work lang file n_en n_de pair split test_set
  for url in "${URLS[@]}"; do [ -f "$downloads/$(basename "$url")" ] || missing+=("$url"); done
  if [ ${#missing[@]} -gt 0 ]; then
    probe "${missing[0]}" || die "$OFFLINE"  # before anything is created under DEST
    mkdir -p "$downloads"
    for url in "${missing[@]}"; do fetch "$url" "$downloads/$(basename "$url")"; done
  fi
  work=$(mktemp -d "$DEST/.tmp-raw.XXXXXX")
  TMP_DIRS+=("$work")
  mkdir "$work/x"
  echo "extract: WMT'14 en-de training archives"
  for i in "${!URLS[@]}"; do
    archive=$downloads/$(basename "${URLS[$i]}")
    tar -xzf "$archive" -C "$work/x" --wildcards "${MEMBERS[$i]}" 2> "$work/tar.log" ||
      die "cannot extract ${MEMBERS[$i]} from $archive ($(tail -n 1 "$work/tar.log")); delete it and rerun"
  done
  for lang in en de; do
    local train=()
    for corpus in "${TRAIN_CORPORA[@]}"; do file=$(one_file "$work/x" "$corpus.$lang"); train+=("$file"); done
    plain_lines "${train[@]}" > "$work/train.$lang"
  done
  rm -rf "$work/x" "$work/tar.log"
  echo "sacrebleu: newstest2013 (valid) and newstest2014 full (test), cached in $SACREBLEU"
  for pair in "${TEST_SETS[@]}"; do
    split=${pair%%:*} test_set=${pair#*:}
    sacrebleu_side "$test_set" src "$work/$split.en"
    sacrebleu_side "$test_set" ref "$work/$split.de"
  done
  for split in train valid test; do
    n_en=$(wc -l < "$work/$split.en") n_de=$(wc -l < "$work/$split.de")
    [ "$n_en" -eq "$n_de" ] || die "assembled $split is misaligned: $n_en English, $n_de German lines"
    echo "raw $split: $n_en pairs"
  done
  mv "$work" "$DEST/raw"
}

if [ -z "$RAW_DIR" ]; then
  [ -d "$DEST/raw" ] || assemble_wmt14
  RAW_DIR=$DEST/raw
fi
"$PY" "$REPO/scripts/prepare_data.py" --raw-dir "$RAW_DIR" --dest "$DEST" --vocab-size "$VOCAB" --workers "$WORKERS"
