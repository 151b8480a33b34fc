#!/usr/bin/env bash
# The GPU benchmarks in one command, on a machine with a CUDA device:
#
#     bash bench/gpu.sh [RESULTS_DIR]        # default: bench/results/gpu-<UTC time>
#
# It installs codeprm into its own venv (.venv-gpu-bench) from the package index, then runs
#   (a) bench/prm_server.py at the Qwen2-0.5B and Qwen2-1.5B shapes: 512-token items, 256
#       concurrent single-item clients, against one forward pass per request and the best
#       offline batch (targets: >= 10x and >= 80%);
#   (b) bench/ppo_step.py at the Qwen2-0.5B shape: the step's time split (target: reward
#       calls <= 10% of the step);
#   (c) bench/prm_train.py at the Qwen2-0.5B shape: PRM training tokens/s and padding;
# each under its own time limit, so the whole ends within 8 minutes whatever happens, and
# writes RESULTS_DIR/results.json (every figure, each target met or not, each part's status)
# beside each part's log. Models are random weights of those shapes, built here: nothing is
# downloaded but packages.
#
# Settings (environment):
#   CODEPRM_BENCH_SCALE=tiny     tiny shapes, few items and steps, CPU-friendly (the test's run)
#   CODEPRM_BENCH_PYTHON=PATH    run with this interpreter as it is and install nothing
#   CODEPRM_BENCH_LIMIT_S=N      every part's time limit in seconds (default: per part, below)
#   CODEPRM_BENCH_DEVICE=DEV     auto (default), cuda or cpu
set -uo pipefail
cd "$(dirname "$0")/.."
deadline=$((SECONDS + 470)) # 8 minutes, less a few seconds to write the results
out=${1:-bench/results/gpu-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
scale=${CODEPRM_BENCH_SCALE:-full}
device=${CODEPRM_BENCH_DEVICE:-auto}

if [[ -n "${CODEPRM_BENCH_PYTHON:-}" ]]; then
    py=$CODEPRM_BENCH_PYTHON
else
    # torch pinned as the Makefile pins it; from the default index on Linux that is the CUDA
    # build (the Makefile's CPU machines point pip at the CPU wheels instead).
    echo "installing into .venv-gpu-bench (log: $out/install.log)"
    { python3 -m venv .venv-gpu-bench &&
        timeout 200 .venv-gpu-bench/bin/python -m pip install -q torch==2.13.0 &&
        timeout 100 .venv-gpu-bench/bin/python -m pip install -q torch==2.13.0 -e .; } \
        >"$out/install.log" 2>&1 || { echo "install failed: $out/install.log"; exit 1; }
    py=.venv-gpu-bench/bin/python
fi

if [[ $scale == tiny ]]; then
    small=tiny; large=tiny
    server_args=(--items 16 --clients 8 --tokens 96)
    ppo_args=(--steps 1 --prompts 2 --samples 2 --max-new-tokens 16)
    train_args=(--programs 16 --tokens 96 --batch-size 4)
else
    small=qwen2-0.5b; large=qwen2-1.5b
    server_args=(--items 2048 --clients 256 --tokens 512)
    ppo_args=(--steps 2 --prompts 8 --samples 4 --max-new-tokens 128)
    train_args=(--programs 256 --tokens 512 --batch-size 16)
fi

# part NAME LIMIT_S SCRIPT ARGS...: the script's figures in $out/NAME.json, its output in
# $out/NAME.log, its exit status in $out/NAME.rc (124: it ran out of time). A part never runs
# past the 8-minute deadline (CODEPRM_BENCH_LIMIT_S, the test's setting, lifts it); one that
# would get under 10 s is not started (results.json: "not run").
part() {
    local name=$1 limit=${CODEPRM_BENCH_LIMIT_S:-$2} script=$3
    shift 3
    if [[ -z "${CODEPRM_BENCH_LIMIT_S:-}" ]]; then
        ((limit > deadline - SECONDS)) && limit=$((deadline - SECONDS))
        ((limit < 10)) && { echo "$name: no time left"; return; }
    fi
    echo "$name (at most ${limit} s)"
    timeout --kill-after=10 "$limit" "$py" "bench/$script" --device "$device" \
        --json "$out/$name.json" "$@" >"$out/$name.log" 2>&1
    echo $? >"$out/$name.rc"
}

part prm_server_small 75 prm_server.py --shape "$small" "${server_args[@]}"
part prm_server_large 105 prm_server.py --shape "$large" "${server_args[@]}"
part ppo_step 80 ppo_step.py --shape "$small" "${ppo_args[@]}"
part prm_train 75 prm_train.py --shape "$small" "${train_args[@]}"

"$py" bench/gpu_results.py "$out" --scale "$scale"
