#!/bin/sh
# run_unit.sh - runs cmocka unit test binaries and sums their results.
# Usage: tests/run_unit.sh BIN...   (called by `make test-unit`, run_all.sh)
# Prints "unit: N passed, N failed"; exits non-zero if anything failed.
set -u

passed=0
failed=0
out=$(mktemp "${TMPDIR:-/tmp}/tg-unit.XXXXXX") || exit 2
trap 'rm -f "$out"' EXIT INT TERM

if [ "$#" -eq 0 ]; then
    echo "unit: no test binaries given" >&2
    echo "unit: 0 passed, 1 failed"
    exit 1
fi

for bin in "$@"; do
    echo "== $bin"
    if [ ! -x "$bin" ]; then
        echo "unit: $bin: not an executable test binary" >&2
        failed=$((failed + 1))
        continue
    fi
    CMOCKA_MESSAGE_OUTPUT=stdout "$bin" >"$out" 2>&1
    rc=$?
    cat "$out"
    p=$(sed -n 's/^\[  PASSED  \] \([0-9][0-9]*\) test(s)\..*/\1/p' "$out" | tail -n 1)
    f=$(sed -n 's/^\[  FAILED  \] \([0-9][0-9]*\) test(s), listed below:.*/\1/p' "$out" | tail -n 1)
    passed=$((passed + ${p:-0}))
    if [ -n "$f" ]; then
        failed=$((failed + f))
    elif [ "$rc" -ne 0 ]; then
        echo "unit: $bin exited with status $rc without a cmocka FAILED line (crash?)" >&2
        failed=$((failed + 1))
    elif [ -z "$p" ]; then
        echo "unit: $bin printed no cmocka summary" >&2
        failed=$((failed + 1))
    fi
done

echo "unit: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
