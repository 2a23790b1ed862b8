#!/usr/bin/env bash
# Runs the whole suite: the lit tests (dialects, frontend, examples, CLI) and the
# other ctest entries (spec fuzzer, unit tests), then prints one closing line
# "tests: N passed, N failed". Exits non-zero if anything failed.
set -uo pipefail
dir=${1:-build}
lit=/usr/lib/llvm-22/bin/lit

echo "== lit"
lit_out=$("$lit" -sv "$dir/test" 2>&1)
lit_rc=$?
echo "$lit_out" | grep -vE '^(PASS|UNSUPPORTED|XFAIL):' | sed '/^$/d' | tail -n 40
lit_pass=$(echo "$lit_out" | sed -nE 's/^ *Passed *: *([0-9]+).*/\1/p')
lit_fail=$(echo "$lit_out" | sed -nE 's/^ *Failed *: *([0-9]+).*/\1/p')

echo "== ctest"
ctest_out=$(ctest --test-dir "$dir" -E '^lit$' --output-on-failure 2>&1)
ctest_rc=$?
echo "$ctest_out" | tail -n 30
ct_total=$(echo "$ctest_out" | sed -nE 's/.*tests passed, ([0-9]+) tests failed out of ([0-9]+).*/\2/p')
ct_fail=$(echo "$ctest_out" | sed -nE 's/.*tests passed, ([0-9]+) tests failed out of ([0-9]+).*/\1/p')

passed=$(( ${lit_pass:-0} + ${ct_total:-0} - ${ct_fail:-0} ))
failed=$(( ${lit_fail:-0} + ${ct_fail:-0} ))
if [ $lit_rc -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
if [ $ctest_rc -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
