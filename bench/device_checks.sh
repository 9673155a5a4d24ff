#!/usr/bin/env bash
# Every GPU figure of bench/bench_segment.py and the CUDA tests in one run, for a machine with a CUDA GPU and no
# package index (a lent GPU machine with PyTorch but without PyAV, pycocotools and open_clip).
#
#   bash bench/device_checks.sh fetch       # where pip reaches a package index: wheels into .whl/ (git-ignored)
#   bash bench/device_checks.sh run         # on the GPU machine, from the repository root, with .whl/ copied along
#   bash bench/device_checks.sh run capture # only the named steps (here: the network eager / CUDA graph / compiled)
#
# `run` installs .whl/ into /tmp/site (no index, no dependencies: the machine's own torch, numpy, OpenCV, scipy...
# are used), then runs each step under a time limit and writes into $OUT (default ./device_out): device_checks.log
# (everything printed, with one "== step: exit N" line per step) and one figures file per bench step (*.json).
# Steps run from /tmp: the repository root holds a `clipvis/` folder that would hide the installed package.
#
# The limits of all steps but `capture` add up to 560 s, under the device machine's 10 minutes a command (bench
# figures come out as they are measured); `capture` (torch.compile takes minutes) goes in a second call. To try the script itself without a GPU: DEVICE=cpu QUICK=1 bash bench/device_checks.sh run
set -u -o pipefail

WHEELS=.whl
PYTHON_VERSION=${PYTHON_VERSION:-3.12}  # the GPU machine's Python
# The packages the machine lacks, at the versions installed here (or these, where they are not).
MISSING=(av pycocotools open_clip_torch ftfy wcwidth)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)

fetch() {
    rm -rf "$WHEELS" && mkdir -p "$WHEELS" || return 1
    python3 -m pip wheel -q --no-deps --no-build-isolation -w "$WHEELS" . || return 1
    local platform_args=() package version
    for platform in "${PLATFORMS[@]}"; do platform_args+=(--platform "$platform"); done
    for package in "${MISSING[@]}"; do
        version=$(python3 -c "import importlib.metadata as m; print(m.version('$package'))" 2>/dev/null) || version=""
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" \
            --implementation cp "${platform_args[@]}" -d "$WHEELS" "$package${version:+==$version}" || return 1
    done
    du -sh "$WHEELS" && ls "$WHEELS"
}

run() {
    local repo out device quick threads only=("$@")
    repo=$(pwd)
    out=${OUT:-$repo/device_out}
    device=${DEVICE:-cuda}
    quick=${QUICK:-0}
    threads=$(nproc)
    mkdir -p "$out"
    exec > >(tee -a "$out/device_checks.log") 2>&1
    if [ "${SKIP_INSTALL:-0}" != 1 ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            "$WHEELS"/*.whl || { echo "== install: failed"; return 1; }
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    export PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
    echo "$(nproc) CPUs; $(python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.is_available())')"

    # Frame counts: the issue's sizes, or small ones to try the script (QUICK=1).
    local replay=300 frames=200 memory_short=60 memory_long=600 folder_frames=60 size=1280x720
    local capture_arch=r50 capture_repeats=20
    if [ "$quick" = 1 ]; then
        replay=8 frames=8 memory_short=4 memory_long=8 folder_frames=4 size=320x240 capture_arch=tiny capture_repeats=2
    fi
    local bench=("$repo/bench/bench_segment.py" --device "$device" --threads "$threads")
    local failed=0

    step() {  # step NAME SECONDS COMMAND...: every step but capture, or the steps named after `run`
        local name=$1 limit=$2 status
        shift 2
        if [ "${#only[@]}" -gt 0 ]; then
            [[ " ${only[*]} " == *" $name "* ]] || return 0
        elif [ "$name" = capture ]; then
            return 0  # only when named
        fi
        echo "== $name (limit ${limit}s): $*"
        (cd /tmp && timeout "$limit" "$@")
        status=$?
        echo "== $name: exit $status"
        [ "$status" = 0 ] || failed=1
    }

    # Most wanted first: a step that runs out of time costs only itself, and the command's own limit the last ones.
    step cuda_tests 60 python3 -m pytest -q -p no:cacheprovider "$repo/tests/model/test_per_frame_path.py" \
        "$repo/tests/model/test_transfer.py" "$repo/tests/clipvis_cli/test_streaming.py" -k "cuda or device"
    step r50_throughput 90 python3 "${bench[@]}" --model r50 --parts a --precision bf16 --size "$size" \
        --frames "$frames" --out-json "$out/a_r50.json"
    step replay 80 python3 "${bench[@]}" --parts e --replay-frames "$replay" --replay-size "$size" \
        --out-json "$out/e.json"
    step r50_memory_by_length 90 python3 "${bench[@]}" --model r50 --parts g --precision bf16 --size "$size" \
        --gpu-memory-frames "$memory_short" "$memory_long" --out-json "$out/g_r50.json"
    step r50_folder 90 python3 "${bench[@]}" --model r50 --parts h --precision bf16 --size "$size" \
        --folder-videos 6 --folder-frames "$folder_frames" --repeats 1 --out-json "$out/h_r50.json"
    step convnext_throughput 100 python3 "${bench[@]}" --model convnext-b --parts a --precision bf16 --size "$size" \
        --frames "$frames" --out-json "$out/a_convnext.json"
    step replay_2_drawing_threads 50 python3 "${bench[@]}" --parts e --replay-frames "$replay" \
        --replay-size "$size" --render-threads 2 --replay-variants network --out-json "$out/e_2threads.json"
    # Only when named (`run capture`): with all of the above it would pass the 10 minutes of one command.
    step capture 400 python3 "$repo/bench/bench_network_capture.py" --device "$device" --arch "$capture_arch" \
        --precision bf16 --size "$size" --batch 4 --repeats "$capture_repeats"
    return "$failed"
}

case "${1:-}" in
    fetch) fetch ;;
    run) shift; run "$@" ;;
    *) echo "usage: bash bench/device_checks.sh fetch | run [STEP...]" >&2; exit 2 ;;
esac
