#!/bin/sh
# bench/run.sh - what `make bench` runs: builds the product and the benchmark
# programs, then bench/run.py drives them (table on stdout, JSON in
# bench/results/latest.json).  BUILD and BIN are honoured like in the Makefile.
set -e
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
BIN=${BIN:-bin}
make --no-print-directory BUILD="$BUILD" BIN="$BIN" all bench-progs >/dev/null
exec /usr/bin/python3 bench/run.py --bin "$BIN" --bench "$BUILD/bench" --out bench/results/latest.json "$@"
