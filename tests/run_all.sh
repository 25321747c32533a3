#!/bin/sh
# run_all.sh - the whole test suite, called by `make test`: plain unit tests,
# ASan+UBSan unit tests, integration against the ASan build, then against the
# plain build.  Ends with one line "N passed, N failed" (totals).
# Usage: tests/run_all.sh PLAIN_BIN ASAN_BIN "PLAIN_UNIT_BINS" "ASAN_UNIT_BINS"
set -u

if [ "$#" -ne 4 ]; then
    echo "usage: $0 PLAIN_BIN ASAN_BIN \"PLAIN_UNIT_BINS\" \"ASAN_UNIT_BINS\"" >&2
    exit 2
fi
PLAIN_BIN=$1
ASAN_BIN=$2
PLAIN_UNITS=$3
ASAN_UNITS=$4
HERE=$(cd "$(dirname "$0")" && pwd -P)

total_passed=0
total_failed=0
summary=""

# section NAME COMMAND...: runs COMMAND, takes its last "...: N passed, N failed"
# line into the totals (a section that prints none counts as 1 failure).
section() {
    name=$1
    shift
    echo
    echo "######## $name"
    log=$(mktemp "${TMPDIR:-/tmp}/tg-test.XXXXXX") || exit 2
    { "$@" 2>&1; echo "$?" >"$log.rc"; } | tee "$log"
    rc=$(cat "$log.rc" 2>/dev/null || echo 1)
    line=$(grep -E '^[a-z]+: [0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
    rm -f "$log" "$log.rc"
    if [ -z "$line" ]; then
        p=0
        f=1
        echo "$name: no summary line (exit status $rc)" >&2
    else
        counts=${line#*: }
        p=${counts%% passed*}
        f=${counts#*passed, }
        f=${f% failed}
        if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
            echo "$name: exit status $rc with no failed test: counted as 1 failure" >&2
            f=1
        fi
    fi
    total_passed=$((total_passed + p))
    total_failed=$((total_failed + f))
    summary="$summary
  $name: $p passed, $f failed"
}

# Word splitting of the binary lists is intended (make passes them as one word).
# shellcheck disable=SC2086
section "unit (plain)" sh "$HERE/run_unit.sh" $PLAIN_UNITS

# shellcheck disable=SC2086
section "unit (asan+ubsan)" env \
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:halt_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    sh "$HERE/run_unit.sh" $ASAN_UNITS

# The daemons' stderr is their process log: sanitizer and leak reports land
# there, and a report makes the process exit non-zero (exitcode=23), which
# the integration tests see on shutdown.
section "integration (asan+ubsan)" env \
    TELGATE_BIN="$ASAN_BIN" TELGATE_SANITIZED=1 \
    ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=0:exitcode=23:print_summary=1 \
    LSAN_OPTIONS=exitcode=23 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    sh "$HERE/run_integration.sh"

section "integration (plain)" env TELGATE_BIN="$PLAIN_BIN" sh "$HERE/run_integration.sh"

echo
echo "######## summary$summary"
echo "$total_passed passed, $total_failed failed"
[ "$total_failed" -eq 0 ]
