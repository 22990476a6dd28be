#!/bin/sh
# BP MLP 784-512-512-10 on MNIST at batch 64 and 1, with 1 and 2 threads;
# soma against OpenBLAS sgemm on the same shapes (same process) and against
# the same model in PyTorch (python3-torch) when it is installed; then LFP-eps
# vs BP on the same net.  Medians of REPEATS repeats; the ratio lines compare
# runs made back to back.  Called by bench/run.sh.
BUILD=${1:-build/rel}
REPEATS=${REPEATS:-5}
PART=bp
. "$(dirname "$0")/common.sh"
out=$(mktemp)
for threads in 1 2; do
    for batch in 64 1; do
        if [ "$batch" = 1 ]; then steps=2000; else steps=200; fi
        s=$(OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads "$BUILD/bench/bench_bp" $batch $threads $steps $REPEATS) || exit 1
        echo "$s"
        if [ $have_torch = 1 ]; then
            t=$(OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads /usr/bin/python3 bench/torch_mlp.py $batch $threads $steps $REPEATS) || exit 1
            echo "$t"
            ss=$(echo "$s" | sed -E 's/.*samples_per_s=([0-9.]+).*/\1/')
            ts=$(echo "$t" | sed -E 's/.*samples_per_s=([0-9.]+).*/\1/')
            echo "ratio soma/torch batch=$batch threads=$threads: $(awk "BEGIN{printf \"%.2f\", $ss/$ts}")x"
        fi
    done
done | tee "$out"
rm -f "$out"

# --- LFP vs BP ----------------------------------------------------------------
# LFP-epsilon replaces the gradient with its relevance pass on the same net and
# optimizer (clip 3, as the LFP configs); BP with the same clip, back to back.
echo "lfp vs bp: MLP 784-512-512-10, batch 64, clip 3"
for threads in 1 2; do
    b=$(OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads "$BUILD/bench/bench_bp" 64 $threads 200 $REPEATS bp 3) || exit 1
    l=$(OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads "$BUILD/bench/bench_bp" 64 $threads 200 $REPEATS lfp 3) || exit 1
    echo "$b"; echo "$l"
    bs=$(echo "$b" | sed -E 's/.*step_ms=([0-9.]+).*/\1/')
    ls=$(echo "$l" | sed -E 's/.*step_ms=([0-9.]+).*/\1/')
    echo "ratio lfp/bp step time threads=$threads: $(awk "BEGIN{printf \"%.2f\", $ls/$bs}")x"
done
