#!/bin/sh
# run_integration.sh - runs the pytest integration tests (tests/integration)
# and the stand-in's own tests against the binaries in $TELGATE_BIN.
# Usage: [TELGATE_BIN=DIR] tests/run_integration.sh [pytest args]
# Prints "integration: N passed, N failed"; exits non-zero on any failure.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$ROOT" || exit 2
TELGATE_BIN=${TELGATE_BIN:-$ROOT/bin}
export TELGATE_BIN

xml=$(mktemp "${TMPDIR:-/tmp}/tg-integration.XXXXXX") || exit 2
trap 'rm -f "$xml"' EXIT INT TERM

echo "== integration tests (TELGATE_BIN=$TELGATE_BIN)"
/usr/bin/python3 -m pytest -q -p no:cacheprovider --junitxml="$xml" \
    tests/integration tests/standin_test.py "$@"
rc=$?

# Counts from the JUnit report: passed = tests - failures - errors - skipped.
counts=$(/usr/bin/python3 - "$xml" <<'PY'
import sys
import xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except (ET.ParseError, OSError):
    print("0 0")
    sys.exit(0)
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
t = f = s = 0
for su in suites:
    t += int(su.get("tests", 0))
    f += int(su.get("failures", 0)) + int(su.get("errors", 0))
    s += int(su.get("skipped", 0))
print(t - f - s, f)
PY
)
passed=${counts% *}
failed=${counts#* }

case "$rc" in
    0) ;;
    5) echo "integration: pytest collected no tests - that is a failure (wrong path, a -k filter that matches nothing, or an import error?)" >&2
       [ "$failed" -gt 0 ] || failed=1 ;;
    *) if [ "$failed" -eq 0 ]; then
           echo "integration: pytest exited with status $rc (collection or usage error)" >&2
           failed=1
       fi ;;
esac

echo "integration: $passed passed, $failed failed"
[ "$rc" -eq 0 ] && [ "$failed" -eq 0 ]
