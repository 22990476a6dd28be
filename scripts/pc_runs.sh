#!/bin/sh
# PC experiments of docs/results.md (issue 4): each config trained for the same
# number of epochs, two runs at a time with one thread each (the machine has two
# cores); each run logs runs/pc/NAME.jsonl. Then prints a table of test accuracy
# (classifiers) or test loss (autoencoders) per epoch.
#   sh scripts/pc_runs.sh EPOCHS CONFIG...      e.g.
#   sh scripts/pc_runs.sh 15 configs/pc-seqil-mq-mlp-cifar10.ini configs/pc-bp-sgd-mlp-cifar10.ini
# TABLE_ONLY=1 prints the table from existing logs.
set -e
E=${1:?usage: pc_runs.sh EPOCHS CONFIG...}; shift
SOMA=${SOMA:-./soma}
mkdir -p runs/pc
if [ -z "$TABLE_ONLY" ]; then
    lane() { for f in "$@"; do
        n=$(basename "$f" .ini)
        $SOMA train --config "$f" --epochs "$E" --threads 1 --quiet --metrics "runs/pc/$n.jsonl" \
            > "runs/pc/$n.out" 2>&1 || echo "pc_runs: $f failed (runs/pc/$n.out)" >&2
    done; }
    a=""; b=""; i=0
    for f in "$@"; do if [ $((i % 2)) = 0 ]; then a="$a $f"; else b="$b $f"; fi; i=$((i + 1)); done
    lane $a & lane $b & wait
fi
for f in "$@"; do
    n=$(basename "$f" .ini)
    [ -f "runs/pc/$n.jsonl" ] || continue
    awk -v n="$n" -F'[,:{}]' '
        /"type":"epoch"/ { for (i = 1; i < NF; i++) {
              if ($i == "\"test_acc\"") acc = $(i + 1); if ($i == "\"test_loss\"") loss = $(i + 1);
              if ($i == "\"train_seconds\"") sec += $(i + 1) }
            ae = (index($0, "\"test_acc\":0,") > 0 || acc == 0)
            line = line sprintf(" %s", ae ? sprintf("%.4f", loss) : sprintf("%.2f", 100 * acc))
            if (ae) { if (best == "" || loss < best) best = loss } else if (100 * acc > best) best = 100 * acc
            e++ }
        END { printf "%-28s epochs %d  best %s  %.0f s  per epoch:%s\n", n, e, best, sec, line }' "runs/pc/$n.jsonl"
done
