#!/usr/bin/env bash
# Every GPU measurement of the project in one call: a lent GPU machine starts bare, its time is
# short (15 minutes a session, machine start included), so one prepared script sets up its own
# environment, runs the stages in priority order, each under its own time budget, and leaves
# one summary, one JSON and one tarball of logs in $OUT (the device tool returns <= 8 files).
#
#   a. training-step overhead, TD / no TD: small and transformer_td_wmt_en_de size, in fp32,
#      fp16, bf16 and memory-efficient fp16 (benchmarks/step_overhead.py)
#   b. TD masks honoured under fp16, bf16 (autocast and fairseq's own) and memory-efficient fp16 (benchmarks/gpu_fp16_check.py)
#   c. 2:4 semi-structured against dense bf16: forward, beam decoding, identical output
#      (benchmarks/semi_structured_speed.py, both backends)
#   d. vision step overhead, wrn28_10 bf16 (benchmarks/vision_overhead.py, if present)
#   e. with the time left, the Multi30k budget study: no_td until its val loss stops improving
#      (scripts/study.py --config-name multi30k_budget; results and logs in the tarball)
#
# Here, once, with the network (wheels for Python 3.12, fairseq-fixed's sources, Multi30k):
#   bash benchmarks/gpu_suite.sh prepare                      # fills out/gpu_env (ignored by git)
# On the GPU, through the device tool (the exact call; COMMIT names the checkout in the results,
# as the copy there may have no git):
#   run(command="COMMIT=<short hash>+dirty bash benchmarks/gpu_suite.sh", carry=["out/gpu_env"], timeout_s=600)
# On this CPU, every stage at tiny size, end to end:
#   SMOKE=1 DEVICE=cpu bash benchmarks/gpu_suite.sh
#
# Environment: DEVICE [cuda], SMOKE [0], BUDGET_SECONDS [540, smoke 4000: the whole run; keep it
# under the tool's timeout_s], PYTHON [.venv/bin/python where there is one, else python3],
# OUT [out/gpu_suite], ENV_DIR [out/gpu_env], COMMIT, FORCE_BOOTSTRAP
# [0; 1: install the carried fairseq even where one imports, to test the bootstrap on a CPU].
#
# The GPU image has torch, numpy, cython, sacrebleu, sentencepiece, pyyaml but no fairseq: the
# bootstrap installs the carried wheels (hydra-core, omegaconf, antlr4 runtime) into a folder on
# PYTHONPATH, unpacks fairseq-fixed's Python sources there and builds its one Cython extension
# (data_utils_fast, fairseq's batching; nothing else compiled), and puts fairseq-train,
# fairseq-preprocess and fairseq-generate shims on PATH. Where fairseq imports already, it is used.
set -u
cd "$(dirname "$0")/.."
REPO=$PWD
ENV_DIR=${ENV_DIR:-out/gpu_env}
PY=${PYTHON:-$([ -x "$REPO/.venv/bin/python" ] && echo "$REPO/.venv/bin/python" || echo python3)}
FAIRSEQ=fairseq-fixed==0.12.3.1

if [ "${1:-}" = prepare ]; then
    set -e
    mkdir -p "$ENV_DIR/wheels"
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$ENV_DIR/wheels" hydra-core==1.3.2 omegaconf==2.3.0
    $PY -m pip wheel -q --no-deps antlr4-python3-runtime==4.9.3 -w "$ENV_DIR/wheels"  # an sdist only: built here
    # --no-build-isolation: reading the sdist's metadata must not fetch a CUDA torch (docs: ENV.md)
    $PY -m pip download -q --no-deps --no-build-isolation --no-binary :all: $FAIRSEQ -d "$ENV_DIR"
    rm -rf "$ENV_DIR/multi30k" && cp -r "${MULTI30K_SOURCE:-$REPO/../shared/data/multi30k}" "$ENV_DIR/multi30k"
    du -sh "$ENV_DIR"
    exit 0
fi

SMOKE=${SMOKE:-0}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET_SECONDS:-$([ "$SMOKE" = 1 ] && echo 4000 || echo 540)}
OUT=${OUT:-$REPO/out/gpu_suite}
WORK=$(mktemp -d)
LOGS=$WORK/logs
SUMMARY=$WORK/summary.md
START=$(date +%s)
mkdir -p "$LOGS" "$OUT"
trap 'rm -rf "$WORK"' EXIT  # checkpoints and data stay behind; OUT has the results
export PYTHONUNBUFFERED=1 PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}

left() { echo $((BUDGET - ($(date +%s) - START))); }

bootstrap() {
    if [ "${FORCE_BOOTSTRAP:-0}" != 1 ] && $PY -c "import fairseq.data.data_utils_fast" 2>/dev/null; then
        echo "fairseq already importable: $($PY -c 'import fairseq; print(fairseq.__file__)' 2>/dev/null)"
        return 0
    fi
    local site=$WORK/site src
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        "$ENV_DIR"/wheels/*.whl || return 1
    tar xzf "$ENV_DIR"/fairseq_fixed-*.tar.gz -C "$WORK" || return 1
    src=$(echo "$WORK"/fairseq_fixed-*)
    rm -rf "$src/fairseq/examples"
    cp -r "$src/fairseq" "$src/fairseq_cli" "$site/"
    (cd "$site" && $PY - <<'EOF') || return 1
import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
ext = Extension("fairseq.data.data_utils_fast", ["fairseq/data/data_utils_fast.pyx"], language="c++",
                include_dirs=[numpy.get_include()], extra_compile_args=["-std=c++11", "-O3"])
setup(name="fairseq_batching", script_args=["build_ext", "--inplace", "-q"], ext_modules=cythonize([ext], quiet=True))
EOF
    mkdir -p "$WORK/bin"
    for tool in train preprocess generate; do
        printf '#!/bin/sh\nexec %s -m fairseq_cli.%s "$@"\n' "$PY" "$tool" > "$WORK/bin/fairseq-$tool"
        chmod +x "$WORK/bin/fairseq-$tool"
    done
    export PYTHONPATH=$site:$PYTHONPATH PATH=$WORK/bin:$PATH
    $PY -c "import fairseq.data.data_utils_fast, fairseq; print('fairseq', fairseq.__version__, 'from', fairseq.__file__)"
}

# stage NAME SECONDS COMMAND...: run under the smaller of its budget and the time left; log to
# LOGS/NAME.log; one summary row; the log's tail on stdout (the tool returns the output's end)
stage() {
    local name=$1 budget=$2 rc t0
    shift 2
    [ "$budget" -gt "$(left)" ] && budget=$(left)
    if [ "$budget" -lt 15 ]; then
        echo "| $name | skipped: $(left) s left |" >> "$SUMMARY"
        return
    fi
    t0=$(date +%s)
    echo "== $name (budget ${budget} s): $*"
    timeout -k 10 "$budget" "$@" > "$LOGS/$name.log" 2>&1
    rc=$?
    echo "| $name | $([ $rc = 0 ] && echo ok || echo "FAILED rc $rc$([ $rc = 124 ] && echo ', out of time')") | $(($(date +%s) - t0)) s of $budget s |" >> "$SUMMARY"
    grep -v -i -E "warning|deprecat|hydra|^\s*$|See https|warnings.warn" "$LOGS/$name.log" | tail -n 25
    collect
}

# results.json (every stage's JSON), results.md (summary and each log's last lines), logs.tar.gz;
# rewritten after every stage, so a run killed at its limit still leaves its results
collect() {
    $PY - "$LOGS" "$OUT/results.json" > "$WORK/headline.md" <<'EOF'
import glob, json, os, sys
logs, out = sys.argv[1:]
merged = {}
for path in sorted(glob.glob(os.path.join(logs, "*.json"))):
    try:
        merged[os.path.basename(path)[:-5]] = json.load(open(path))
    except ValueError as error:
        merged[os.path.basename(path)[:-5]] = {"unreadable": str(error)}
json.dump(merged, open(out, "w"), indent=1)
rows = [(r["size"], row) for r in merged.values() if "rows" in r for row in r["rows"]]
if rows:  # the headline: training-step time against --td-type none, per size and precision
    keys = sorted({k for _, row in rows for k in row if k.endswith("/td_none")})
    print("| size | precision | " + " | ".join(keys) + " |")
    print("|" + "---|" * (len(keys) + 2))
    for size, row in rows:
        print(f"| {size} | {row['precision']} | " + " | ".join(f"{row[k]:.3f}" if k in row else "" for k in keys) + " |")
semi = merged.get("c_semi_structured", {})
for row in semi.get("forward", []):
    print(f"- 2:4 {row['part']} batch {row['batch']}, dense time / time: "
          + ", ".join(f"{k.split('/')[0]} {v:.2f}" for k, v in row.items() if "/" in k))
for name, row in semi.get("identical", {}).items():
    print(f"- {name}: {row['identical'] * 100:.1f} % of {row['sentences']} sentences identical to the dense twin, "
          f"max logit difference {row['max_logit_difference']:.3g}")
EOF
    {
        echo "# GPU suite: $(date -u +%Y-%m-%dT%H:%MZ), $([ "$SMOKE" = 1 ] && echo 'SMOKE (tiny sizes, not a result)' || echo full)"
        echo
        echo "commit ${COMMIT:-$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)}, device $DEVICE, $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi'), torch $($PY -c 'import torch; print(torch.__version__)' 2>/dev/null)"
        echo
        echo "| stage | result | time |"
        echo "|---|---|---|"
        cat "$SUMMARY"
        echo
        cat "$WORK/headline.md"
        for log in "$LOGS"/*.log; do
            echo
            echo "## $(basename "$log" .log)"
            echo '```'
            grep -v -i -E "warning|deprecat|hydra|^\s*$|See https|warnings.warn" "$log" | tail -n 80
            echo '```'
        done
    } > "$OUT/results.md"
    tar czf "$OUT/logs.tar.gz" -C "$WORK" logs $([ -d "$WORK/multi30k_export" ] && echo multi30k_export) 2>/dev/null
}

echo "gpu_suite: device $DEVICE, smoke $SMOKE, budget $BUDGET s, out $OUT"
: > "$SUMMARY"
t0=$(date +%s)
bootstrap > "$LOGS/bootstrap.log" 2>&1  # in this shell: it exports PYTHONPATH and PATH
rc=$?
echo "| bootstrap | $([ $rc = 0 ] && echo ok || echo "FAILED rc $rc") | $(($(date +%s) - t0)) s |" >> "$SUMMARY"
tail -n 5 "$LOGS/bootstrap.log"

if [ "$SMOKE" = 1 ]; then
    STEP="--size tiny --tokens 256 --length 16 --vocab 200 --steps 2 --warmup 1"
    stage a_step_small 900 $PY benchmarks/step_overhead.py --device "$DEVICE" $STEP \
        --precision fp32 fp16 bf16 bf16-fairseq memory-efficient-fp16 --variants td_weight td_interval10 td_pattern24 td_none stock \
        --json "$LOGS/a_step_small.json"
    stage b_half_precision 900 $PY benchmarks/gpu_fp16_check.py --cpu-smoke --updates 2 \
        --precision fp16 bf16 bf16-fairseq memory-efficient-fp16
    stage c_semi_structured 900 $PY benchmarks/semi_structured_speed.py --smoke --backend cusparselt cutlass \
        --json "$LOGS/c_semi_structured.json"
    VISION="--arch resnet32 --device $DEVICE --batch 8 --steps 2 --warmup 1" VISION_SECONDS=600
    STUDY_ARGS=("arch=--arch transformer_td_tiny --share-all-embeddings" budget.max_epoch=1)
else
    stage a_step_small 110 $PY benchmarks/step_overhead.py --device "$DEVICE" --size small --steps 20 --warmup 5 \
        --precision fp32 fp16 bf16 bf16-fairseq memory-efficient-fp16 --variants td_weight td_interval10 td_pattern24 td_none stock \
        --json "$LOGS/a_step_small.json"
    stage a_step_wmt 110 $PY benchmarks/step_overhead.py --device "$DEVICE" --size wmt --steps 10 --warmup 3 \
        --precision fp32 fp16 bf16 bf16-fairseq memory-efficient-fp16 --variants td_weight td_none stock \
        --json "$LOGS/a_step_wmt.json"
    stage b_half_precision 80 $PY benchmarks/gpu_fp16_check.py --updates 6 --precision fp16 bf16 bf16-fairseq memory-efficient-fp16
    stage c_semi_structured 150 $PY benchmarks/semi_structured_speed.py --device "$DEVICE" \
        --backend cusparselt cutlass --decode-repeats 2 --json "$LOGS/c_semi_structured.json"
    VISION="--arch wrn28_10 --device cuda --amp bf16 --batch 128" VISION_SECONDS=70
    STUDY_ARGS=()
fi
if [ -f benchmarks/vision_overhead.py ]; then
    stage d_vision "$VISION_SECONDS" $PY benchmarks/vision_overhead.py $VISION --json "$LOGS/d_vision.json"
else
    echo "| d_vision | skipped: benchmarks/vision_overhead.py not in this checkout |" >> "$SUMMARY"
fi
stage e_multi30k_budget "$(($(left) - 30))" env MULTI30K="$REPO/$ENV_DIR/multi30k" $PY scripts/study.py -m \
    --config-name multi30k_budget device="$DEVICE" hydra.sweep.dir="$WORK/multi30k" "${STUDY_ARGS[@]}"
if [ -d "$WORK/multi30k" ]; then  # the small files (results, logs, report), not the checkpoints or the data
    $PY scripts/study_report.py "$WORK/multi30k" > "$LOGS/e_report.log" 2>&1
    mkdir -p "$WORK/multi30k_export"
    (cd "$WORK/multi30k" && find . -path ./data -prune -o -path ./raw -prune -o -type f \( -name '*.json' \
        -o -name '*.log' -o -name '*.md' -o -name '*.csv' -o -name '*.png' -o -name '*.yaml' \) \
        -exec cp --parents {} "$WORK/multi30k_export" \;) 2>/dev/null
    collect
fi
collect
echo
cat "$SUMMARY"
echo "gpu_suite: $(($(date +%s) - START)) s; results in $OUT: results.md, results.json, logs.tar.gz"
