#!/bin/sh
# fuzz/run.sh - build soma's fuzz targets and run each for a bounded time.
#
#   sh fuzz/run.sh                 (what `make fuzz` runs)
#   FUZZ_SECONDS=600 sh fuzz/run.sh          longer runs (default 60 s per target)
#   FUZZ_TARGETS=safetensors sh fuzz/run.sh  only some targets (default: idx safetensors events)
#   CLANG=clang-15 sh fuzz/run.sh            another compiler
#
# Each target fuzz/fuzz_<t>.c is linked with clang's libFuzzer, ASan and UBSan
# (UB aborts, so it counts as a crash) against the whole library built the
# same way into build/fuzz/libsoma-fuzz.a; the archive means a target pulls
# in only the objects it uses.  The working corpus fuzz/corpus-<t>/ (ignored
# by git, kept between runs so coverage accumulates) is seeded from the
# committed fuzz/seeds/<t>/ and, for safetensors, from tests/fixtures.
# Crash inputs land in build/fuzz/crash-<t>-*; replay one with
#   build/fuzz/fuzz_<t> build/fuzz/crash-<t>-...
# or without libFuzzer: cc -DSOMA_FUZZ_MAIN ... fuzz/fuzz_<t>.c <library sources>.
#
# Without clang or its libFuzzer runtime this prints a SKIP line and exits 0,
# so `make fuzz` is harmless on a machine that cannot fuzz.
set -eu
cd "$(dirname "$0")/.."

SECS=${FUZZ_SECONDS:-60}
CLANG=${CLANG:-clang}
TARGETS=${FUZZ_TARGETS:-"idx safetensors events"}
OUT=build/fuzz
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
CFLAGS="-std=c11 -D_POSIX_C_SOURCE=200809L -Iinclude -Isrc -g -O1 -fno-omit-frame-pointer -fopenmp"
LIBS="-lopenblas -lz -llzma -lm -fopenmp"

skip() {
    echo "SKIP fuzz: $1"
    echo "     install with: apt-get install clang-14 libclang-rt-14-dev   (then re-run make fuzz)"
    exit 0
}

command -v "$CLANG" >/dev/null 2>&1 || skip "$CLANG not found"
mkdir -p "$OUT"
printf '%s\n' '#include <stddef.h>' \
    'int LLVMFuzzerTestOneInput(const unsigned char *d, size_t n) { (void)d; (void)n; return 0; }' \
    > "$OUT/probe.c"
"$CLANG" -fsanitize=fuzzer,address,undefined "$OUT/probe.c" -o "$OUT/probe" >/dev/null 2>&1 ||
    skip "$CLANG cannot link -fsanitize=fuzzer (libFuzzer runtime missing)"

# The library, instrumented for coverage but without libFuzzer's main.
echo "fuzz: building the library with $CLANG -fsanitize=fuzzer-no-link,address,undefined"
rm -rf "$OUT/obj" "$OUT/libsoma-fuzz.a"
mkdir -p "$OUT/obj"
# A file that does not compile here is left out with a warning (the gcc
# build and `make test` are where compile errors are enforced); a target
# that needs it then fails to link, loudly.
for src in src/*/*.c; do
    obj="$OUT/obj/$(echo "$src" | tr / _ | sed 's/\.c$/.o/')"
    "$CLANG" $CFLAGS -w -fsanitize=fuzzer-no-link $SAN -c "$src" -o "$obj" 2>"$obj.err" ||
        echo "fuzz: warning: $src does not compile with $CLANG, left out ($(head -n 1 "$obj.err"))"
done
ar rcs "$OUT/libsoma-fuzz.a" "$OUT"/obj/*.o

status=0
for t in $TARGETS; do
    if [ ! -f "fuzz/fuzz_$t.c" ]; then
        echo "SKIP fuzz_$t: fuzz/fuzz_$t.c does not exist"
        continue
    fi
    "$CLANG" $CFLAGS -fsanitize=fuzzer $SAN "fuzz/fuzz_$t.c" "$OUT/libsoma-fuzz.a" \
        -o "$OUT/fuzz_$t" $LIBS

    corpus="fuzz/corpus-$t"
    mkdir -p "$corpus"
    if [ -d "fuzz/seeds/$t" ]; then cp fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null || true; fi
    if [ "$t" = safetensors ]; then
        for f in tests/fixtures/*.safetensors; do
            # Big fixtures only slow the fuzzer down; small ones carry the structure.
            if [ -f "$f" ] && [ "$(wc -c < "$f")" -le 65536 ]; then cp "$f" "$corpus"/; fi
        done
    fi
    dict=""
    if [ -f "fuzz/$t.dict" ]; then dict="-dict=fuzz/$t.dict"; fi

    echo "fuzz: running fuzz_$t for $SECS s (corpus $corpus, $(ls "$corpus" | wc -l) files)"
    log="$OUT/fuzz_$t.log"
    if OMP_NUM_THREADS=1 "$OUT/fuzz_$t" -max_total_time="$SECS" -rss_limit_mb=2048 \
            -max_len=65536 -timeout=10 -print_final_stats=1 $dict \
            -artifact_prefix="$OUT/crash-$t-" "$corpus" >"$log" 2>&1; then
        runs=$(grep -o 'Done [0-9]* runs' "$log" | tail -n 1 || true)
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)
        echo "PASS fuzz_$t: ${runs:-done} in $SECS s, $cov, corpus now $(ls "$corpus" | wc -l) files"
    else
        status=1
        tail -n 40 "$log"
        echo "FAIL fuzz_$t: see $log; crash input(s): $(ls "$OUT"/crash-"$t"-* 2>/dev/null | tr '\n' ' ')"
    fi
done
exit $status
