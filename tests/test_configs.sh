#!/bin/sh
# Every committed config (configs/*.ini) parses and builds its net and rule:
# `soma train --config F --dry-run` on tiny stand-in datasets of the right
# shapes (IDX for mnist/fashion, CIFAR binary batches), so the check needs no
# download and no time.  A config whose keys, net or rule options went stale
# fails here.  Other datasets (nmnist) have no stand-in: such a config is
# dry-run against its real directory (data-dir, else data/<data>) and skipped,
# with a 'skipped' line, where that directory is absent (CI).
# Usage: sh tests/test_configs.sh BUILD
BUILD=${1:-build/rel}
SOMA=$BUILD/soma
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0; fail=0; skip=0
/usr/bin/python3 - "$T" <<'PY'
import os, struct, sys, random
d = sys.argv[1]; rnd = random.Random(0)
os.makedirs(d + "/idx"); os.makedirs(d + "/cifar10")
for name, n in (("train", 64), ("t10k", 64)):
    with open(d + "/idx/%s-images-idx3-ubyte" % name, "wb") as f:
        f.write(struct.pack(">IIII", 0x803, n, 28, 28)); f.write(bytes(rnd.randrange(256) for _ in range(784 * n)))
    with open(d + "/idx/%s-labels-idx1-ubyte" % name, "wb") as f:
        f.write(struct.pack(">II", 0x801, n)); f.write(bytes(i % 10 for i in range(n)))
for name in ["data_batch_%d" % i for i in range(1, 6)] + ["test_batch"]:
    with open(d + "/cifar10/%s.bin" % name, "wb") as f:
        for i in range(16):
            f.write(bytes([i % 10])); f.write(bytes(rnd.randrange(256) for _ in range(3072)))
PY
for f in configs/*.ini; do
    data=$(sed -nE 's/^data *= *([a-z0-9]+).*/\1/p' "$f")
    case "$data" in
        mnist|fashion) dir=$T/idx ;;
        cifar10) dir=$T/cifar10 ;;
        adding) dir= ;;   # generated
        *) dir=
           real=$(sed -nE 's/^data-dir *= *([^ #]+).*/\1/p' "$f")
           real=${real:-data/$data}
           if [ ! -d "$real" ]; then
               skip=$((skip + 1)); echo "skipped: $f ($real absent)"; continue
           fi ;;
    esac
    if out=$($SOMA train --config "$f" ${dir:+--data-dir $dir} --no-verify --dry-run 2>&1); then
        pass=$((pass + 1))
    else
        fail=$((fail + 1)); echo "FAIL: $f: $out" | head -3
    fi
done
[ $skip = 0 ] || echo "test_configs: $skip skipped (no data)"
echo "test_configs: $pass passed, $fail failed"
[ $fail = 0 ]
