#!/bin/sh
# Pruning curve (LFP paper, notes/lfp.md sec. 9): test accuracy after zeroing the
# fraction p of dense/conv weights with the smallest |w|, without fine-tuning.
# usage: sh scripts/prune_curve.sh DATA CKPT [CKPT ...]   (env PER_LAYER=1: per layer)
# Prints one row per p, one accuracy column per checkpoint (and the Gini index at p = 0).
DATA=$1; shift
SOMA=${SOMA:-./soma}
FLAG=""
[ "${PER_LAYER:-0}" = 1 ] && FLAG="--prune-per-layer"
printf '%-6s' "p"
for c in "$@"; do printf ' %24s' "$(basename "$c" .st)"; done
printf '\n'
for p in 0 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.85 0.9 0.95 0.97 0.99; do
    printf '%-6s' "$p"
    for c in "$@"; do
        a=$($SOMA eval --ckpt "$c" --data "$DATA" --prune "$p" $FLAG | head -1 | sed -E 's/accuracy ([0-9.]+)%.*gini ([0-9.]+).*/\1 \2/')
        acc=${a% *}; gini=${a#* }
        if [ "$p" = 0 ]; then printf ' %15s (gini %.3f)' "$acc" "$gini"; else printf ' %24s' "$acc"; fi
    done
    printf '\n'
done
