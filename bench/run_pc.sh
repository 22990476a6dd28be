#!/bin/sh
# Predictive coding (rule pc, docs/pc.md) vs BP on the MLP 3072-1024-1024-1024-10,
# ReLU, batch 64, CIFAR-10 (issue 4): whole training iterations of BP-SGD, BP-Adam,
# SeqIL T=3 with SGD, MQ and Adam, and standard IL T=3 (SGD), interleaved in one
# process (bench/bench_pc.c), and the same in PyTorch (bench/torch_pc.py) when
# python3-torch is installed; threads 1 and 2, medians of REPEATS.
# The target: step time seqil/bp <= 1.1 x (7L-1)/(3L-1), the paper's ratio of
# matrix multiplies (Table 4); and soma faster than PyTorch (speedup > 1).
# usage: sh bench/run_pc.sh [BUILD]   (REPEATS, PC_STEPS from the environment)
BUILD=${1:-build/rel}
REPEATS=${REPEATS:-5}
STEPS=${PC_STEPS:-30}
PART=pc
. "$(dirname "$0")/common.sh"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "pc vs bp: MLP 3072-1024-1024-1024-10, batch 64, T=3, CIFAR-10, $STEPS steps x $REPEATS repeats"
for threads in 1 2; do
    OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads \
        "$BUILD/bench/bench_pc" $threads $STEPS $REPEATS > "$out.s" || { rm -f "$out.s"; exit 1; }
    cat "$out.s"; cat "$out.s" >> "$out"
    if [ $have_torch = 1 ]; then
        OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads \
            /usr/bin/python3 bench/torch_pc.py $threads $STEPS $REPEATS > "$out.s" || { rm -f "$out.s"; exit 1; }
        cat "$out.s"; cat "$out.s" >> "$out"
    fi
done
rm -f "$out.s"

line() { grep "^$1 pc variant=$2 .* threads=$3 " "$out"; }
# the BP run each PC variant is compared with: same optimizer (MQ: SGD, the plain step)
base() { case $1 in bp-*) echo - ;; *-adam) echo bp-adam ;; *) echo bp-sgd ;; esac; }

echo
echo "PC summary (step = one training iteration, ms; speedup = torch/soma step time, > 1: soma"
echo "faster; ratio = step time / that of the BP run with the same optimizer, MQ against BP-SGD;"
echo "ceiling = 1.1 x (7L-1)/(3L-1); rss = growth while the variant was built and warmed up)"
printf '%-10s %7s %8s %8s %7s %10s %11s %7s %8s %9s %10s\n' variant threads soma_ms torch_ms \
    speedup soma_ratio torch_ratio ceiling soma_rss torch_rss optim_B
ceiling=$(grep -m1 '^soma pc ratio=' "$out" | sed -nE 's/.* ceiling=([^ ]+).*/\1/p')
for threads in 1 2; do
    for v in bp-sgd bp-adam seqil-sgd seqil-mq seqil-adam il-sgd; do
        s=$(line soma $v $threads); t=$(line torch $v $threads)
        [ -n "$s" ] || continue
        b=$(base $v)
        sr=-; tr=-; c=-
        if [ "$b" != - ]; then
            sr=$(div "$(field "$s" step_ms)" "$(field "$(line soma $b $threads)" step_ms)")
            [ -n "$t" ] && tr=$(div "$(field "$t" step_ms)" "$(field "$(line torch $b $threads)" step_ms)")
            c=${ceiling:--}
        fi
        sp=-; tm=-; trss=-
        if [ -n "$t" ]; then
            tm=$(field "$t" step_ms); trss=$(field "$t" rss_mib)
            sp=$(div "$tm" "$(field "$s" step_ms)")
        fi
        printf '%-10s %7s %8s %8s %7s %10s %11s %7s %8s %9s %10s\n' $v $threads \
            "$(field "$s" step_ms)" "$tm" "$sp" "$sr" "$tr" "$c" "$(field "$s" rss_mib)" \
            "$trss" "$(field "$s" optim_state_bytes)"
    done
done
