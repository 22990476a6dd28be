#!/bin/sh
# LFP through time on the Heaviside LIF MLP 784-1000-10 of configs/lfp-lif-mnist.ini
# (T=25, direct input, spike-count readout, SGD momentum, clip 3, batch 128, MNIST;
# issue 6): whole training steps of rule lfp and, in the same process, of surrogate
# BPTT on the same net (bench/bench_lfp_snn.c), and of the same LFP update written in
# plain PyTorch (bench/torch_lfp_snn.py) when python3-torch is installed; threads 1
# and 2, medians of REPEATS repeats of LFP_STEPS steps after one warm-up step.
# Before timing, torch_lfp_snn.py --check recomputes one soma LFP step (weights after
# 100 soma steps, a fixed batch of 32) in float64 and compares fb and the update:
# the PyTorch timing is of the same computation only if it passes (LFP_CHECK=0 skips).
# usage: sh bench/run_lfp.sh [BUILD]   (REPEATS, LFP_STEPS, LFP_CHECK from the environment)
BUILD=${1:-build/rel}
REPEATS=${REPEATS:-5}
STEPS=${LFP_STEPS:-30}
PART=lfp
. "$(dirname "$0")/common.sh"
out=$(mktemp)
trap 'rm -f "$out" "$out.s"' EXIT
echo "lfp (snn): LIF 784-1000-10, T=25, batch 128, MNIST; rule lfp vs bptt (fast-sigmoid 25) vs PyTorch, $STEPS steps x $REPEATS repeats"
if [ $have_torch = 1 ] && [ "${LFP_CHECK:-1}" != 0 ]; then
    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
        /usr/bin/python3 bench/torch_lfp_snn.py --check "$BUILD" || { echo "lfp: torch_lfp_snn.py --check failed" >&2; exit 1; }
fi
for threads in 1 2; do
    OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads \
        "$BUILD/bench/bench_lfp_snn" $threads "$STEPS" "$REPEATS" 128 > "$out.s" || exit 1
    cat "$out.s"; cat "$out.s" >> "$out"
    if [ $have_torch = 1 ]; then
        OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads \
            /usr/bin/python3 bench/torch_lfp_snn.py $threads "$STEPS" "$REPEATS" 128 > "$out.s" || exit 1
        cat "$out.s"; cat "$out.s" >> "$out"
    fi
done

line() { grep "^$1 lfp_snn rule=$2 .* threads=$3 " "$out"; }

echo
echo "LFP-SNN summary (step = one training step, ms; speedup = torch/soma LFP step time, > 1: soma"
echo "faster; lfp/bptt = soma's LFP step / its surrogate-BPTT step on the same net; rss: peak MiB,"
echo "soma's of the process that ran both rules)"
printf '%7s %12s %13s %13s %8s %9s %9s %10s\n' threads soma_lfp_ms soma_bptt_ms torch_lfp_ms \
    speedup lfp/bptt soma_rss torch_rss
for threads in 1 2; do
    l=$(line soma lfp $threads); b=$(line soma bptt $threads); t=$(line torch lfp $threads)
    [ -n "$l" ] || continue
    lm=$(field "$l" step_ms); bm=$(field "$b" step_ms); tm=$(field "$t" step_ms)
    printf '%7s %12s %13s %13s %8s %9s %9s %10s\n' $threads "$lm" "$bm" "$tm" "$(div "$tm" "$lm")" \
        "$(div "$lm" "$bm")" "$(field "$b" peak_rss_mib)" "$(field "$t" peak_rss_mib)"
done
