#!/bin/sh
# IDE (rule ide, docs/ide.md) on F400 (784-400-bn-10, 400x400 feedback with spectral norm, LIF
# 0.95, V_th 2, Broyden 30), batch 128, Fashion-MNIST (issue 7): whole training iterations
# split into the T-step simulation and the implicit backward, for each T of IDE_TS
# (bench/bench_ide.c), next to the same model and rule in plain PyTorch (bench/torch_ide.py)
# when python3-torch is installed; threads 1 and 2, medians of REPEATS repeats of IDE_STEPS
# iterations after a warm-up.  Memory: soma_rule_plan's bytes and the peak RSS of a fresh
# process per T (bench_ide rss T).
# Before timing, torch_ide.py --check recomputes one soma training iteration (its initial
# weights, the first batch, T = IDE_CHECK_T) in float64 and compares the rates, beta, the
# gradients and the step; bench_ide check also verifies that its split timing path is
# bit-identical to soma_rule_train_batch (run alone when torch is missing; IDE_CHECK=0 skips).
# The targets: backward flat in T, memory flat in T (the ratios max/min over T below, ~1),
# and soma >= 2x faster than PyTorch (speedup = torch/soma iteration time).
# IDE_NET=f64c5: the same on F64C5 (configs/ide-f64c5-mnist.ini's conv net on MNIST, both
# sides; the --check is F400's, skipped: the conv forms are checked by tests/test_ide.c).
# usage: sh bench/run_ide.sh [BUILD]   (REPEATS default 5, IDE_STEPS default 3,
#        IDE_TS default "5 30 100", IDE_CHECK_T default 5, IDE_CHECK, IDE_NET, from the environment)
BUILD=${1:-build/rel}
REPEATS=${REPEATS:-5}
STEPS=${IDE_STEPS:-3}
TS=${IDE_TS:-5 30 100}
CHECK_T=${IDE_CHECK_T:-5}
PART=ide
. "$(dirname "$0")/common.sh"
out=$(mktemp)
trap 'rm -f "$out" "$out.s" "$out.st"' EXIT
case ${IDE_NET:-f400} in
f400) echo "ide: F400 784-400-bn-10, batch 128, LIF 0.95, Broyden 30; T = $TS; $STEPS iterations x $REPEATS repeats" ;;
f64c5) echo "ide: F64C5 conv5x64s2p2-bn-10 (MNIST), batch 128, LIF 0.95, Broyden 30; T = $TS; $STEPS iterations x $REPEATS repeats"
       IDE_CHECK=0 ;;
*) echo "ide: IDE_NET must be f400 or f64c5, got '$IDE_NET'" >&2; exit 2 ;;
esac
if [ "${IDE_CHECK:-1}" != 0 ]; then
    if [ $have_torch = 1 ]; then
        OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
            /usr/bin/python3 bench/torch_ide.py --check "$BUILD" "$CHECK_T" || { echo "ide: torch_ide.py --check failed" >&2; exit 1; }
    else
        OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 \
            "$BUILD/bench/bench_ide" check "$out.st" "$CHECK_T" || { echo "ide: bench_ide check failed" >&2; exit 1; }
    fi
fi
for T in $TS; do
    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 "$BUILD/bench/bench_ide" rss "$T" 1 > "$out.s" || exit 1
    cat "$out.s"; cat "$out.s" >> "$out"
done
for threads in 1 2; do
    # shellcheck disable=SC2086
    OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads \
        "$BUILD/bench/bench_ide" $threads "$STEPS" "$REPEATS" $TS > "$out.s" || exit 1
    cat "$out.s"; cat "$out.s" >> "$out"
    if [ $have_torch = 1 ]; then
        # shellcheck disable=SC2086
        OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads \
            /usr/bin/python3 bench/torch_ide.py $threads "$STEPS" "$REPEATS" $TS > "$out.s" || exit 1
        cat "$out.s"; cat "$out.s" >> "$out"
    fi
done

line() { grep "^$1 ide net=.* threads=$2 T=$3 " "$out"; }
rssline() { grep "^soma ide rss .* T=$1 " "$out"; }
# max/min of the numbers on stdin, "-" if any is not a number
ratio() { awk 'BEGIN{ok=1} $1 !~ /^[0-9.]+$/ {ok=0} {v=$1+0; if (NR==1||v>mx) mx=v; if (NR==1||v<mn) mn=v}
               END{if (!ok || NR==0 || mn<=0) print "-"; else printf "%.2f", mx/mn}'; }

echo
echo "IDE summary (ms = one training iteration of 128, median; sim = spectral-norm weight + F x"
echo "+ T steps, bwd = readout, f(a_T), implicit solve, parameter VJPs; total = the whole iteration"
echo "(soma_rule_train_batch), the optimizer step in it; speedup = torch/soma total, target >= 2;"
echo "it = solver J^T products; plan = soma_rule_plan, rss = peak RSS of a fresh soma process, MiB)"
printf '%4s %7s %8s %8s %9s %4s %9s %9s %9s %4s %7s %7s %7s\n' T threads soma_sim soma_bwd soma_total it \
    torch_sim torch_bwd torch_total it speedup plan rss
for threads in 1 2; do
    for T in $TS; do
        s=$(line soma $threads "$T"); t=$(line torch $threads "$T"); m=$(rssline "$T")
        [ -n "$s" ] || continue
        ts=-; tb=-; tt=-; ti=-
        if [ -n "$t" ]; then
            ts=$(field "$t" sim_ms); tb=$(field "$t" backward_ms); tt=$(field "$t" step_ms); ti=$(field "$t" iters)
        fi
        printf '%4s %7s %8s %8s %9s %4s %9s %9s %9s %4s %7s %7s %7s\n' "$T" $threads \
            "$(field "$s" sim_ms)" "$(field "$s" backward_ms)" "$(field "$s" step_ms)" "$(field "$s" iters)" \
            "$ts" "$tb" "$tt" "$ti" "$(div "$tt" "$(field "$s" step_ms)")" \
            "$(field "$s" plan_mib)" "$(field "$m" peak_rss_mib)"
    done
done
echo
for threads in 1 2; do
    b=$(for T in $TS; do field "$(line soma $threads "$T")" backward_ms; done | ratio)
    tb=$(for T in $TS; do field "$(line torch $threads "$T")" backward_ms; done | ratio)
    [ $have_torch = 1 ] || tb=-
    echo "backward flat in T (max/min over T = $TS), threads $threads: soma $b, torch $tb"
done
p=$(for T in $TS; do field "$(rssline "$T")" plan_bytes; done | ratio)
r=$(for T in $TS; do field "$(rssline "$T")" peak_rss_mib; done | ratio)
g=$(for T in $TS; do field "$(rssline "$T")" rss_mib; done | ratio)
echo "memory flat in T (max/min over T = $TS): plan $p, peak RSS $r, RSS growth over the data set $g"
