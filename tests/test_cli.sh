#!/bin/sh
# CLI behaviour: usage errors (exit 2) and runtime errors (exit 1) with
# messages that name the file/option; checkpoints (atomic, readable by
# Python, rejected when shapes differ); bit-identical --resume; NaN stop.
# Usage: sh tests/test_cli.sh BUILD [quick|full]
BUILD=${1:-build/rel}
MODE=${2:-full}
SOMA=$BUILD/soma
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0; fail=0
ok()   { pass=$((pass + 1)); }
bad()  { fail=$((fail + 1)); echo "FAIL: $*"; }

# expect CODE SUBSTRING -- command...
expect() {
    code=$1; sub=$2; shift 3
    out=$("$@" 2>&1); rc=$?
    if [ "$rc" != "$code" ]; then bad "'$*' exited $rc, expected $code: $out"; return; fi
    case "$out" in *"$sub"*) ok;; *) bad "'$*' output lacks '$sub': $out";; esac
}

# A tiny MNIST-shaped dataset in IDX format: class k is a bright k-th band.
/usr/bin/python3 - "$T/d" <<'PY'
import os, struct, sys, random, gzip
d = sys.argv[1]; os.makedirs(d)
rnd = random.Random(0)
def write(name, n):
    imgs = bytearray(); labs = bytearray()
    for i in range(n):
        k = i % 10
        px = [rnd.randrange(0, 60) for _ in range(784)]
        for r in range(k * 2 + 4, k * 2 + 6):
            for c in range(28): px[r * 28 + c] = 200 + rnd.randrange(0, 55)
        imgs += bytes(px); labs.append(k)
    with open(os.path.join(d, name + "-images-idx3-ubyte"), "wb") as f:
        f.write(struct.pack(">IIII", 0x803, n, 28, 28)); f.write(imgs)
    with gzip.open(os.path.join(d, name + "-labels-idx1-ubyte.gz"), "wb") as f:
        f.write(struct.pack(">II", 0x801, n)); f.write(labs)
write("train", 640); write("t10k", 200)
PY
D="--data mnist --data-dir $T/d --no-verify --quiet --metrics $T/m.jsonl"

# --- usage errors ---------------------------------------------------------
expect 2 "unknown option '--bogus'" -- $SOMA train --bogus
expect 2 "--batch" -- $SOMA train $D --net 784-10 --batch 0
expect 2 "--batch" -- $SOMA train $D --net 784-10 --batch -3
expect 2 "--lr" -- $SOMA train $D --net 784-10 --lr 0
expect 2 "--lr" -- $SOMA train $D --net 784-10 --lr -1
expect 2 "--epochs" -- $SOMA train $D --net 784-10 --epochs 0
expect 2 "not an integer" -- $SOMA train $D --net 784-10 --batch abc
expect 2 "token 2 'fcx'" -- $SOMA train $D --net 784-fcx-10
expect 2 "unknown layer" -- $SOMA train $D --net 784-banana-10
expect 2 "input size 100" -- $SOMA train $D --net 100-10
expect 2 "empty token" -- $SOMA train $D --net 784--10
expect 2 "unknown rule 'nope'" -- $SOMA train $D --net 784-10 --rule nope
expect 2 "unknown command" -- $SOMA frobnicate
expect 2 "--ckpt is required" -- $SOMA eval
expect 2 "unknown key 'bogus'" -- sh -c "printf 'bogus = 1\n' > $T/bad.ini; $SOMA train --config $T/bad.ini"
expect 0 "usage: soma train" -- $SOMA train --help
expect 0 "bp" -- $SOMA train --help

# --- data errors ------------------------------------------------------------
expect 1 "$T/nowhere" -- $SOMA train --data mnist --data-dir $T/nowhere --net 784-10 --quiet --metrics $T/m.jsonl
mkdir -p "$T/bad"; cp "$T/d"/* "$T/bad/"
printf 'XXXX' | dd of="$T/bad/train-images-idx3-ubyte" bs=1 count=4 conv=notrunc 2>/dev/null
expect 1 "train-images-idx3-ubyte" -- $SOMA train --data mnist --data-dir $T/bad --no-verify --net 784-10 --quiet --metrics $T/m.jsonl
cp "$T/d"/train-images-idx3-ubyte "$T/bad/"
head -c 100000 "$T/d/train-images-idx3-ubyte" > "$T/bad/train-images-idx3-ubyte"
expect 1 "truncated" -- $SOMA train --data mnist --data-dir $T/bad --no-verify --net 784-10 --quiet --metrics $T/m.jsonl

# --- train, checkpoint, info, eval, python reader ---------------------------
expect 0 "test accuracy" -- $SOMA train $D --net 784-32-10 --epochs 1 --batch 32 --lr 0.05 --save $T/a.st
[ -f "$T/a.st" ] && ok || bad "checkpoint not written"
[ -f "$T/a.st.tmp" ] && bad "temporary checkpoint left behind" || ok
grep -q '"type":"run"' "$T/m.jsonl" && grep -q '"type":"epoch"' "$T/m.jsonl" && ok || bad "metrics log lacks run/epoch lines"
expect 0 "1.weight" -- $SOMA info $T/a.st
expect 2 "--ltc-map-bn" -- $SOMA train $D --net 784-ltc16-10 --rule bptt --ltc-map-bn 1
# --warmup-steps: 20 batches of 32 in the epoch, N = 40: the last step runs at 20/40 of the rate
expect 2 "--warmup-steps" -- $SOMA train $D --net 784-10 --warmup-steps -1
expect 0 "test accuracy" -- $SOMA train $D --net 784-10 --epochs 1 --batch 32 --lr 0.05 --warmup-steps 40 --metrics $T/w.jsonl
grep -q '"type":"epoch".*"lr":0.025,' "$T/w.jsonl" && ok || bad "warmup-steps: last lr is not 0.025: $(grep epoch "$T/w.jsonl")"
expect 0 "confusion matrix" -- $SOMA eval --ckpt $T/a.st --data mnist --data-dir $T/d --no-verify
# --eval-every: test records mid-epoch (steps 5, 10, 15 of 20), and the training unchanged by them
expect 2 "--eval-every" -- $SOMA train $D --net 784-10 --eval-every -1
expect 0 "test accuracy" -- $SOMA train $D --net 784-10 --epochs 1 --batch 32 --lr 0.05 --metrics $T/e0.jsonl
expect 0 "test accuracy" -- $SOMA train $D --net 784-10 --epochs 1 --batch 32 --lr 0.05 --eval-every 5 --metrics $T/e5.jsonl
[ "$(grep -c '"type":"eval"' "$T/e5.jsonl")" = 3 ] && grep -q '"type":"eval","epoch":1,"step":15,"train_loss"' "$T/e5.jsonl" \
    && ok || bad "eval-every 5: not 3 eval records: $(cat "$T/e5.jsonl")"
[ "$(grep '"type":"epoch"' "$T/e0.jsonl" | sed 's/.*"test_loss"/"test_loss"/; s/,"sign.*//')" = \
  "$(grep '"type":"epoch"' "$T/e5.jsonl" | sed 's/.*"test_loss"/"test_loss"/; s/,"sign.*//')" ] \
    && ok || bad "eval-every changed the training: $(grep epoch "$T/e0.jsonl" "$T/e5.jsonl")"
if /usr/bin/python3 -c "import numpy" 2>/dev/null; then
    expect 0 "1.weight" -- /usr/bin/python3 tests/st_check.py "$T/a.st" --expect 1.weight:32x784 --expect 3.weight:10x32
fi
expect 1 "shape" -- $SOMA train $D --net 784-64-10 --epochs 2 --resume $T/a.st
expect 1 "$T/missing.st" -- $SOMA eval --ckpt $T/missing.st --data mnist --data-dir $T/d --no-verify
head -c 300 "$T/a.st" > "$T/trunc.st"
expect 1 "trunc.st" -- $SOMA eval --ckpt $T/trunc.st --data mnist --data-dir $T/d --no-verify

# --- resume is bit-identical to an uninterrupted run ------------------------
R="$D --net 784-32-drop0.2-16-10 --batch 16 --lr 0.05 --momentum 0.9 --seed 7 --threads 1"
$SOMA train $R --epochs 3 --save $T/full.st >/dev/null 2>&1 || bad "full run failed"
$SOMA train $R --epochs 1 --save $T/part.st >/dev/null 2>&1 || bad "part run failed"
$SOMA train $R --epochs 3 --resume $T/part.st --save $T/part.st >/dev/null 2>&1 || bad "resumed run failed"
if cmp -s "$T/full.st" "$T/part.st"; then ok; else
    # the git commit in metadata is the same; any difference is in the numbers
    bad "resumed checkpoint differs from the uninterrupted one"
fi
# same with Adam and a step schedule
R2="$D --net 784-24-10 --batch 32 --opt adam --lr 0.002 --sched step --step-size 1 --gamma 0.5 --seed 3"
$SOMA train $R2 --epochs 2 --save $T/f2.st >/dev/null 2>&1 || bad "adam full run failed"
$SOMA train $R2 --epochs 1 --save $T/p2.st >/dev/null 2>&1 || bad "adam part run failed"
$SOMA train $R2 --epochs 2 --resume $T/p2.st --save $T/p2.st >/dev/null 2>&1 || bad "adam resumed run failed"
cmp -s "$T/f2.st" "$T/p2.st" && ok || bad "adam resumed checkpoint differs"

# --- NaN/Inf stops training and keeps the last good checkpoint -------------
cp "$T/a.st" "$T/good.st"
expect 1 "NaN" -- $SOMA train $D --net 784-32-10 --epochs 2 --batch 32 --lr 1e30 --resume $T/good.st --save $T/good.st
cmp -s "$T/a.st" "$T/good.st" && ok || bad "checkpoint changed although training diverged"
grep -q '"type":"error"' "$T/m.jsonl" && ok || bad "NaN not recorded in the metrics log"

# --- OpenBLAS kernels: an explicit OPENBLAS_CORETYPE is honoured; without it an AVX
# CPU never runs OpenBLAS's SSE3 fallback (soma_exec_tuned)
v=$(OPENBLAS_CORETYPE=Prescott $SOMA version | sed -n 's/^openblas //p')
[ "$v" = Prescott ] && ok || bad "OPENBLAS_CORETYPE=Prescott not honoured: '$v'"
if grep -qw avx /proc/cpuinfo 2>/dev/null; then
    v=$(env -u OPENBLAS_CORETYPE $SOMA version | sed -n 's/^openblas //p')
    [ -n "$v" ] && [ "$v" != Prescott ] && ok || bad "SSE3 OpenBLAS kernels on an AVX CPU: '$v'"
fi

# --- --shift: random translation of digits ----------------------------------
expect 2 "--shift" -- $SOMA train $D --net 784-10 --shift 9
expect 2 "exclude each other" -- $SOMA train $D --net 784-10 --shift 2 --augment
$SOMA train $D --net 784-24-10 --epochs 1 --batch 32 --shift 2 --metrics $T/sh.jsonl >/dev/null 2>&1 &&
    grep -q '"shift":2' "$T/sh.jsonl" && ok || bad "--shift 2 run failed or not recorded"

# --- spiking nets and BPTT ---------------------------------------------------
S="$D --neuron lif --rule bptt --batch 32"
expect 2 "--T" -- $SOMA train $S --net 784-32-10 --T 0
expect 2 "unknown surrogate 'wiggly'" -- $SOMA train $S --net 784-32-10 --surrogate wiggly
expect 2 "tau must be > 0" -- $SOMA train $S --net 784-32-10 --tau -5
expect 2 "alpha" -- $SOMA train $S --net 784-32-10 --alpha 1.5
expect 2 "threshold" -- $SOMA train $S --net 784-32-10 --threshold 0
expect 2 "unknown neuron" -- $SOMA train $S --net 784-32-10 --neuron hodgkin
expect 2 "spiking" -- $SOMA train $D --net 784-r32-10 --rule bp
expect 2 "use bptt" -- $SOMA train $D --net 784-32-10 --neuron lif --rule bp
expect 0 "test accuracy" -- $SOMA train $S --net 784-r32-10 --T 6 --epochs 1 --opt adam --lr 0.002 --save $T/s.st
expect 0 "soma.cell" -- $SOMA info $T/s.st
expect 0 "confusion matrix" -- $SOMA eval --ckpt $T/s.st --data mnist --data-dir $T/d --no-verify
expect 0 "test accuracy" -- $SOMA train $S --net 784-24-10 --neuron alif --T 5 --encoding poisson --reduce last --trunc 2 --epochs 1
expect 0 "test accuracy" -- $SOMA train $S --net 1-16-10 --T 784 --encoding sequential --train-limit 64 --test-limit 32 --epochs 1
# BPTT memory grows with T; the dry run says by how much
a=$($SOMA train $S --net 784-64-10 --T 10 --dry-run | sed -n 's/^  activations *\([0-9]*\).*/\1/p')
b=$($SOMA train $S --net 784-64-10 --T 100 --dry-run | sed -n 's/^  activations *\([0-9]*\).*/\1/p')
if [ -n "$a" ] && [ -n "$b" ] && [ "$b" -gt $((a * 5)) ]; then ok; else bad "bptt activations T=10: '$a', T=100: '$b' (expected growth with T)"; fi
# resume of a spiking run is bit-identical too
R3="$S --net 784-r24-10 --T 5 --opt adam --lr 0.002 --seed 5"
$SOMA train $R3 --epochs 2 --save $T/sf.st >/dev/null 2>&1 || bad "spiking full run failed"
$SOMA train $R3 --epochs 1 --save $T/sp.st >/dev/null 2>&1 || bad "spiking part run failed"
$SOMA train $R3 --epochs 2 --resume $T/sp.st --save $T/sp.st >/dev/null 2>&1 || bad "spiking resumed run failed"
cmp -s "$T/sf.st" "$T/sp.st" && ok || bad "spiking resumed checkpoint differs"

# --- the other rules through the CLI ------------------------------------------
expect 2 "ep-beta" -- $SOMA train $D --net 784-10 --ep-beta abc
expect 2 "--pc-order: unknown pc order 'sideways'" -- $SOMA train $D --net 784-10 --pc-order sideways
expect 2 "lfp" -- $SOMA train $D --net 784-10 --lfp-rule nonsense
expect 2 "must be 0 or 1" -- $SOMA train $D --net 784-10 --ep-symmetric 2
expect 0 "test accuracy" -- $SOMA train $D --net 784-32-10 --rule lfp --epochs 1 --lr 0.05 --clip 3
expect 0 "test accuracy" -- $SOMA train $D --net 784-32-10 --rule pc --opt adam --lr 1e-3 --epochs 1 --save $T/pc.st
expect 0 "confusion matrix" -- $SOMA eval --ckpt $T/pc.st --data mnist --data-dir $T/d --no-verify
expect 0 "test accuracy" -- $SOMA train $D --net 784-32-10 --rule pc --opt mq --lr 1e-3 --epochs 1 --save $T/mq.st
expect 0 "optim.mq_v" -- $SOMA info $T/mq.st
# convKxCmM: the pool before the cell (the LIF-CNN's order); poolK after it
out=$($SOMA train $D --net conv5x4m2-fc10 --neuron lif --rule bptt --T 2 --dry-run 2>&1)
case "$out" in *"1 maxpool"*"2 cell"*) ok;; *) bad "conv5x4m2 is not conv-pool-cell: $out";; esac
out=$($SOMA train $D --net conv5x4-pool2-fc10 --neuron lif --rule bptt --T 2 --dry-run 2>&1)
case "$out" in *"1 cell"*"2 maxpool"*) ok;; *) bad "conv5x4-pool2 is not conv-cell-pool: $out";; esac
expect 2 "max pool size" -- $SOMA train $D --net conv5x4mz-fc10 --dry-run
expect 2 "--bn-gamma" -- $SOMA train $D --net 784-bn-10 --bn-gamma inf --dry-run
# autoencoders: the input is the target (BCE summed over the pixels), for bp and pc
expect 2 "--autoencoder needs --loss bce or mse" -- $SOMA train $D --net 784-16-784 --autoencoder
expect 2 "--loss bce needs targets" -- $SOMA train $D --net 784-16-784 --loss bce
expect 2 "--pc-autoencoder needs --autoencoder" -- $SOMA train $D --net 784-16-784 --rule pc --pc-autoencoder 1
expect 2 "rule pc needs --loss bce" -- $SOMA train $D --net 784-16-784 --rule pc --autoencoder --loss mse
expect 1 "has 10 outputs but 784 inputs" -- $SOMA train $D --net 784-16-10 --autoencoder --loss bce
for rule in bp pc; do
    out=$($SOMA train --data mnist --data-dir $T/d --no-verify --metrics $T/ae.jsonl --net 784-32-784 --autoencoder \
          --loss bce --rule $rule --opt adam --lr 1e-3 --epochs 3 --save $T/ae-$rule.st 2>&1) || bad "ae $rule: $out"
    # the reconstruction loss falls from epoch 1 to 3, and the log has no accuracy
    first=$(grep '"epoch":1,' $T/ae.jsonl | sed -E 's/.*"test_loss":([0-9.e+-]+).*/\1/')
    last=$(grep '"epoch":3,' $T/ae.jsonl | sed -E 's/.*"test_loss":([0-9.e+-]+).*/\1/')
    awk "BEGIN{exit !($last < $first && $first > 0)}" && ok || bad "ae $rule: test BCE $first -> $last"
    case "$out" in *"test BCE"*) ok;; *) bad "ae $rule: output lacks 'test BCE': $out";; esac
    # eval of the checkpoint reproduces the last epoch's test loss
    ev=$($SOMA eval --ckpt $T/ae-$rule.st --data mnist --data-dir $T/d --no-verify 2>&1 | sed -nE 's/^test BCE ([0-9.]+) .*/\1/p')
    awk "BEGIN{d = ${ev:-0} - $last; exit !(d < 1e-3 * $last && -d < 1e-3 * $last)}" && ok || bad "ae $rule: eval BCE '$ev' vs log $last"
done
expect 0 "test accuracy" -- $SOMA train $D --net 784-32-10 --act clamp01 --init xavier_uniform --rule ep --loss mse \
    --opt sgd --momentum 0 --lr 1 --ep-lrs 0.1,0.05 --ep-free 20 --ep-nudge 6 --batch 20 --epochs 1 --save $T/ep.st
expect 0 "confusion matrix" -- $SOMA eval --ckpt $T/ep.st --data mnist --data-dir $T/d --no-verify
expect 0 "fptt.wbar" -- sh -c "$SOMA train $D --net 784-ltc16-10 --rule fptt --encoding direct --T 4 --readout li \
    --reduce last --opt adam --lr 0.003 --clip 1 --epochs 1 --batch 32 --save $T/f.st >/dev/null && $SOMA info $T/f.st"
expect 2 "fptt" -- $SOMA train $D --net 784-ltc16-10 --rule fptt --T 4 --fptt-alpha 0
expect 0 "test MSE" -- $SOMA train --data adding --net 2-r32-1 --neuron lif --rule bptt --encoding frames --T 20 \
    --readout none --reduce last --loss mse --opt adam --lr 0.003 --train-limit 256 --test-limit 64 --epochs 1 --quiet --metrics $T/a.jsonl
expect 0 "test MSE" -- $SOMA train --data adding --net 2-ltc32-1 --rule fptt --encoding frames --T 20 --fptt-k 5 \
    --readout none --reduce last --loss mse --opt adam --lr 0.003 --clip 1 --train-limit 256 --test-limit 64 --epochs 1 --quiet --metrics $T/a.jsonl

# --- pruning, warm starts, sign changes, LTC init -----------------------------
expect 0 "pruned" -- $SOMA eval --ckpt $T/a.st --data mnist --data-dir $T/d --no-verify --prune 0.5
expect 2 "--prune" -- $SOMA eval --ckpt $T/a.st --data mnist --data-dir $T/d --no-verify --prune 1.5
expect 0 "test accuracy" -- $SOMA train $D --net 784-32-10 --rule lfp --epochs 1 --init-from $T/a.st
grep -q '"sign_changes"' "$T/m.jsonl" && ok || bad "no sign_changes in the epoch log"
expect 1 "shape" -- $SOMA train $D --net 784-64-10 --epochs 1 --init-from $T/a.st
expect 0 "test accuracy" -- $SOMA train $D --net 784-ltc16-10 --rule fptt --T 3 --ltc-init uniform --epochs 1 --batch 32
expect 2 "uniform" -- $SOMA train $D --net 784-ltc16-10 --rule fptt --T 3 --ltc-init random

# --- dry run prints the memory plan -----------------------------------------
expect 0 "activations" -- $SOMA train $D --net 784-512-512-10 --dry-run
# rule ide takes a static current or spike frames, not the spiking encoders
expect 1 "not encoding poisson" -- $SOMA train $D --rule ide --encoding poisson --T 4 --net 784-10-10 --dry-run
expect 2 "1 channels are not T = 4 frames" -- $SOMA train $D --rule ide --encoding frames --T 4 --net 784-10-10 --dry-run

# --- real data (full mode, after make data) --------------------------------
if [ "$MODE" = full ] && [ -f data/mnist/train-labels-idx1-ubyte ]; then
    expect 0 "test accuracy" -- $SOMA train --data mnist --net 784-128-10 --train-limit 5000 --test-limit 1000 --quiet --metrics $T/r.jsonl
    mkdir -p "$T/corrupt"; cp data/mnist/* "$T/corrupt/"
    printf '\001' | dd of="$T/corrupt/t10k-labels-idx1-ubyte" bs=1 seek=9 count=1 conv=notrunc 2>/dev/null
    expect 1 "t10k-labels-idx1-ubyte" -- $SOMA train --data mnist --data-dir $T/corrupt --net 784-10 --quiet --metrics $T/r.jsonl
fi
if [ "$MODE" = full ] && [ -f data/nmnist/train1K.txt ]; then
    N="--data nmnist --neuron lif --rule bptt --encoding frames --T 8 --batch 50 --quiet --metrics $T/n.jsonl"
    expect 0 "test accuracy" -- $SOMA train $N --net 2312-r32-10 --epochs 1 --opt adam --lr 0.002 --save $T/n.st
    expect 0 "confusion matrix" -- $SOMA eval --ckpt $T/n.st --data nmnist
    expect 2 "encoding frames" -- $SOMA train --data nmnist --net 2312-10 --quiet --metrics $T/n.jsonl
    # rule ide on spike input: the rate net takes one 2x34x34 frame, the rule runs the T steps
    I="--data nmnist --rule ide --encoding frames --T 4 --batch 50 --train-limit 100 --test-limit 50 --quiet --metrics $T/i.jsonl"
    expect 0 "test accuracy" -- $SOMA train $I --net conv5x8s2p1-bn-10 --ide-fb-k 3 --binary-frames --epochs 1 --save $T/i.st
    expect 0 "confusion matrix" -- $SOMA eval --ckpt $T/i.st --data nmnist
    # the rate gap on spike frames: the events binned again for each T
    expect 0 "rms_gap" -- $SOMA eval --ckpt $T/i.st --data nmnist --batch 50 --ide-gap 4,8
    expect 2 "the rate gap needs rule ide" -- $SOMA eval --ckpt $T/n.st --data nmnist --ide-gap 4
    expect 2 "does not match the data (2 x 34 x 34" -- $SOMA train $I --net 4624-100-10
    expect 2 "or rule ide, with --encoding frames" -- $SOMA train --data nmnist --rule ide --net 2312-10 --quiet --metrics $T/i.jsonl
fi

echo "test_cli: $pass passed, $fail failed"
[ "$fail" = 0 ]
