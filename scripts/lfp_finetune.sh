#!/bin/sh
# The LFP paper's fine-tuning setting: BP pre-training for 100 iterations, then LFP (and,
# for comparison, BP) from the same weights; prints test accuracy and the number of
# parameters whose sign changed in each epoch.  usage: sh scripts/lfp_finetune.sh [EPOCHS]
EPOCHS=${1:-3}
SOMA=${SOMA:-./soma}
T=$(mktemp -d)
NET="--data mnist --net 784-512-512-10 --batch 64 --threads 2 --quiet"
$SOMA train $NET --rule bp --lr 0.05 --momentum 0.9 --train-limit 6400 --epochs 1 \
    --metrics "$T/pre.jsonl" --save "$T/pre.st" >/dev/null || exit 1
for rule in lfp bp; do
    $SOMA train $NET --rule $rule --lr 0.05 --momentum 0.9 --clip 3 --sched cosine \
        --epochs "$EPOCHS" --init-from "$T/pre.st" --metrics "$T/$rule.jsonl" >/dev/null || exit 1
    echo "$rule after 100 BP iterations:"
    grep '"type":"epoch"' "$T/$rule.jsonl" | sed -E 's/.*"epoch":([0-9]+).*"test_acc":([0-9.]+).*"sign_changes":([0-9]+).*/  epoch \1  test acc \2  sign changes \3/'
done
rm -rf "$T"
