#!/bin/sh
# make bench: one script per part, bench/run_<name>.sh, in name order: bp
# (BP MLP vs sgemm and PyTorch, LFP vs BP), bptt (spiking nets vs PyTorch,
# memory vs T), then one per learning rule (fptt, lfp, pc, ...).  Each takes
# the build folder and REPEATS and prints its own table.
#   BENCH_ONLY=pc,lfp make bench     runs a subset
BUILD=${1:-build/rel}
export REPEATS=${REPEATS:-5}
# passive OpenMP waits, as the soma CLI sets them (spinning threads on shared
# cores cost 20-40x); PyTorch runs under the same policy
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
fail=0
for f in bench/run_*.sh; do
    [ -e "$f" ] || continue
    name=${f#bench/run_}; name=${name%.sh}
    if [ -n "$BENCH_ONLY" ]; then
        case ",$BENCH_ONLY," in *,$name,*) ;; *) continue ;; esac
    fi
    echo
    echo "=== bench/run_$name.sh"
    sh "$f" "$BUILD" || { echo "bench: bench/run_$name.sh failed" >&2; fail=1; }
done
[ $fail = 0 ] || exit 1
