#!/bin/sh
# BPTT of spiking nets vs PyTorch, and memory vs T.  Called by bench/run.sh.
BUILD=${1:-build/rel}
REPEATS=${REPEATS:-5}
PART=bptt
. "$(dirname "$0")/common.sh"
# --- BPTT -------------------------------------------------------------------
# Spiking nets trained with full BPTT (bench/bench_bptt.c, bench/torch_snn.py):
#   mlp     LIF MLP 784-1000-10, direct encoding, T = 25, batch 128, MNIST
#   smnist  one recurrent LIF layer 1-r512-10 on sequential MNIST (T = 784),
#           batch SMNIST_BATCH; a few training steps, reported per sample
#   rss     peak RSS of one BPTT training step of 1-r512-10 (batch 32) at each
#           T in RSS_TS, each in a fresh process, next to soma's memory plan
# Medians of BPTT_REPEATS repeats (after one warm-up step); the ratio lines
# compare samples/s of runs made back to back (soma/torch: > 1 means soma is faster).
# PyTorch runs a hand-written LIF loop; for mlp also variant "hoist", where the
# input layer (same image every step) runs once per sequence, as soma does:
# "torch-hoist" below, "mlp/h" in the table.
BPTT_REPEATS=${BPTT_REPEATS:-3}
MLP_STEPS=${MLP_STEPS:-5}
SMNIST_STEPS=${SMNIST_STEPS:-1}
SMNIST_BATCH=${SMNIST_BATCH:-32}
RSS_TS=${RSS_TS:-"100 200 500 1000"}
bout=$(mktemp)
emit() { echo "$1"; echo "$1" >> "$bout"; }
bptt_fail=0
echo "bptt: LIF 784-1000-10 (T=25, batch 128) and 1-r512-10 on S-MNIST (T=784, batch $SMNIST_BATCH)"
for mode in mlp smnist; do
    if [ $mode = mlp ]; then steps=$MLP_STEPS; batch=128; else steps=$SMNIST_STEPS; batch=$SMNIST_BATCH; fi
    for threads in 1 2; do
        s=$(OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads "$BUILD/bench/bench_bptt" $mode $threads $steps $BPTT_REPEATS $batch) || { bptt_fail=1; break 2; }
        emit "$s"
        if [ $have_torch = 1 ]; then
            t=$(OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads /usr/bin/python3 bench/torch_snn.py $mode $threads $steps $BPTT_REPEATS $batch) || { bptt_fail=1; break 2; }
            emit "$t"
            emit "ratio soma/torch $mode batch=$batch threads=$threads: $(awk "BEGIN{printf \"%.2f\", $(field "$s" samples_per_s)/$(field "$t" samples_per_s)}")x"
            if [ $mode = mlp ]; then
                t=$(OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads /usr/bin/python3 bench/torch_snn.py $mode $threads $steps $BPTT_REPEATS $batch hoist) || { bptt_fail=1; break 2; }
                emit "$t"
                emit "ratio soma/torch-hoist $mode batch=$batch threads=$threads: $(awk "BEGIN{printf \"%.2f\", $(field "$s" samples_per_s)/$(field "$t" samples_per_s)}")x"
            fi
        fi
    done
done
if [ $bptt_fail = 0 ]; then
    for T in $RSS_TS; do
        s=$("$BUILD/bench/bench_bptt" rss $T) || { bptt_fail=1; break; }
        emit "$s"
        if [ $have_torch = 1 ]; then
            t=$(OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 /usr/bin/python3 bench/torch_snn.py rss $T) || { bptt_fail=1; break; }
            emit "$t"
        fi
    done
fi

# compact table of everything above
echo
echo "BPTT summary (step = one training step; ratio = soma/torch samples/s; mlp/h: torch with the input layer hoisted)"
printf '%-7s %7s %5s %12s %12s %11s %11s %6s %9s %9s\n' model threads batch soma_step_ms torch_step_ms soma_ms/smp torch_ms/smp ratio soma_rss torch_rss
for row in mlp mlp/h smnist; do
    mode=${row%/h}
    if [ $row = $mode ]; then variant=loop; tag=torch; else variant=hoist; tag=torch-hoist; fi
    [ $row = mlp/h ] && [ $have_torch = 0 ] && continue
    for threads in 1 2; do
        s=$(grep "^soma $mode .* threads=$threads " "$bout")
        [ -n "$s" ] || continue
        t=$(grep "^torch $mode variant=$variant .* threads=$threads " "$bout")
        r=$(grep "^ratio soma/$tag $mode .*threads=$threads:" "$bout" | sed -E 's/.*: //')
        printf '%-7s %7s %5s %12s %12s %11s %11s %6s %9s %9s\n' $row $threads "$(field "$s" batch)" \
            "$(field "$s" step_ms)" "$(field "$t" step_ms)" "$(field "$s" ms_per_sample)" \
            "$(field "$t" ms_per_sample)" "${r:--}" "$(field "$s" peak_rss_mib)" "$(field "$t" peak_rss_mib)"
    done
done
echo
echo "BPTT peak RSS vs T, MiB (1-r512-10, batch 32, one training step; delta = peak - RSS before it:"
echo "soma: before the rule is built, so the delta is comparable with the plan; torch: after a T=1 warm-up step)"
printf '%5s %9s %9s %9s %10s %10s %11s %11s\n' T soma_plan soma_peak soma_delta soma_ms torch_peak torch_delta torch_ms
for T in $RSS_TS; do
    s=$(grep "^soma rss .* T=$T " "$bout")
    [ -n "$s" ] || continue
    t=$(grep "^torch rss .* T=$T " "$bout")
    printf '%5s %9s %9s %9s %10s %10s %11s %11s\n' $T "$(field "$s" plan_mib)" "$(field "$s" peak_rss_mib)" \
        "$(field "$s" delta_rss_mib)" "$(field "$s" step_ms)" "$(field "$t" peak_rss_mib)" \
        "$(field "$t" delta_rss_mib)" "$(field "$t" step_ms)"
done
rm -f "$bout"
[ $bptt_fail = 0 ] || { echo "bench: a BPTT benchmark failed" >&2; exit 1; }
