#!/bin/sh
# Runs every test binary under BUILD/tests and the shell tests, sums their
# "N passed, N failed" lines, prints the total and exits non-zero on any
# failure.  Usage: sh tests/run.sh BUILD [quick|full]
BUILD=${1:-build/rel}
MODE=${2:-full}
passed=0; failed=0; broken=""
run_one() {
    name=$1; shift
    out=$("$@" 2>&1); rc=$?
    line=$(printf '%s\n' "$out" | grep -E '^[A-Za-z0-9_.-]+: [0-9]+ passed, [0-9]+ failed$' | tail -1)
    if [ -z "$line" ]; then
        printf '%s\n' "$out" | tail -20
        echo "$name: no result line (exit $rc)"
        failed=$((failed + 1)); broken="$broken $name"
        return
    fi
    p=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed/\1/')
    f=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed/\2/')
    passed=$((passed + p)); failed=$((failed + f))
    if [ "$rc" != 0 ] || [ "$f" != 0 ]; then
        printf '%s\n' "$out" | grep -E 'FAIL|error' | head -30
        [ "$f" = 0 ] && failed=$((failed + 1))
        broken="$broken $name"
    fi
    echo "$line"
}
for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    run_one "$(basename "$t")" "$t"
done
for t in tests/test_*.sh; do
    [ -f "$t" ] || continue
    run_one "$(basename "$t" .sh)" sh "$t" "$BUILD" "$MODE"
done
echo "----"
[ -n "$broken" ] && echo "failing:$broken"
echo "total: $passed passed, $failed failed"
[ "$failed" = 0 ]
