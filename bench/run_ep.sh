#!/bin/sh
# Equilibrium propagation, general (untied) dynamics, on the MLP 784-512-512-10 at batch 20,
# MNIST (issue 5): whole training batches of the seed's setting (configs/ep-general-2h-mnist.ini:
# 200 free / 100 nudged Euler steps, one-sided) and of the fast setting
# (configs/ep-general-2h-fast-mnist.ini: 60 free / 20 nudged), next to OpenBLAS sgemm
# timing the same GEMM sequence in the same process (bench/bench_ep.c), and to the same
# dynamics in plain PyTorch (bench/torch_ep.py) when python3-torch is installed; threads 1
# and 2, medians of REPEATS repeats of EP_STEPS batches after one warm-up batch.
# Before timing, torch_ep.py --check recomputes one soma training batch of each setting (its
# initial weights, a fixed batch) in float64 and compares the phase end states and the
# update: the PyTorch timing is of the same computation only if it passes (EP_CHECK=0 skips).
# The target: soma faster than PyTorch (speedup > 1), and its fraction of the sgemm rate.
# usage: sh bench/run_ep.sh [BUILD]   (REPEATS, EP_STEPS, EP_CHECK, and EP_FREE / EP_NUDGE
#        for the seed setting's iteration counts, from the environment)
BUILD=${1:-build/rel}
REPEATS=${REPEATS:-5}
STEPS=${EP_STEPS:-2}
ITERS="${EP_FREE:-200} ${EP_NUDGE:-100}"
PART=ep
. "$(dirname "$0")/common.sh"
out=$(mktemp)
trap 'rm -f "$out" "$out.s"' EXIT
echo "ep (general dynamics): MLP 784-512-512-10, batch 20, MNIST; seed setting ($ITERS steps) and fast (60 / 20), $STEPS batches x $REPEATS repeats"
if [ $have_torch = 1 ] && [ "${EP_CHECK:-1}" != 0 ]; then
    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
        /usr/bin/python3 bench/torch_ep.py --check "$BUILD" || { echo "ep: torch_ep.py --check failed" >&2; exit 1; }
fi
for threads in 1 2; do
    # shellcheck disable=SC2086
    OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads \
        "$BUILD/bench/bench_ep" $threads "$STEPS" "$REPEATS" $ITERS > "$out.s" || exit 1
    cat "$out.s"; cat "$out.s" >> "$out"
    if [ $have_torch = 1 ]; then
        # shellcheck disable=SC2086
        OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads \
            /usr/bin/python3 bench/torch_ep.py $threads "$STEPS" "$REPEATS" $ITERS > "$out.s" || exit 1
        cat "$out.s"; cat "$out.s" >> "$out"
    fi
done

line() { grep "^$1 ep variant=$2 .* threads=$3 " "$out" | grep -- "${4:-}" ; }

echo
echo "EP summary (ms = one training batch of 20, median; sgemm = fraction of the OpenBLAS sgemm rate"
echo "on the same GEMM sequence that soma's whole batch keeps; torch: the input layer's drive"
echo "recomputed every Euler step, as the papers' code, and torch/h: formed once per batch, as soma;"
echo "speedup = torch/soma batch time, > 1: soma faster; rss: peak MiB of the process, both settings)"
printf '%-8s %7s %6s %8s %6s %9s %8s %9s %8s %8s %9s\n' variant threads euler soma_ms sgemm torch_ms \
    speedup torch/h_ms speedup soma_rss torch_rss
for threads in 1 2; do
    for v in general fast; do
        s=$(line soma $v $threads); t=$(line torch $v $threads impl=loop); th=$(line torch $v $threads impl=hoist)
        [ -n "$s" ] || continue
        tm=-; thm=-; trss=-
        if [ -n "$t" ]; then tm=$(field "$t" step_ms); trss=$(field "$t" peak_rss_mib); fi
        [ -n "$th" ] && thm=$(field "$th" step_ms)
        sm=$(field "$s" step_ms)
        printf '%-8s %7s %6s %8s %6s %9s %8s %9s %8s %8s %9s\n' $v $threads "$(field "$s" euler_steps)" \
            "$sm" "$(field "$s" ratio)" "$tm" "$(div "$tm" "$sm")" "$thm" "$(div "$thm" "$sm")" \
            "$(field "$s" peak_rss_mib)" "$trss"
    done
done
