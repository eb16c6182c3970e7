#!/usr/bin/env bash
# run-unit.sh DIR [NAME]: run every unit-test program in DIR (or only NAME_test), print a summary
# line, and fail if any program failed.
set -u
dir=$1
only=${2:-}
pass=0
fail=0
failed=()
for t in "$dir"/*_test; do
    name=$(basename "$t")
    [ -n "$only" ] && [ "$name" != "${only}_test" ] && [ "$name" != "$only" ] && continue
    if "$t"; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        failed+=("$name")
    fi
done
echo "unit programs ($dir): $pass passed, $fail failed${failed[*]:+ (${failed[*]})}"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
