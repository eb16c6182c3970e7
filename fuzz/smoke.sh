#!/usr/bin/env bash
# smoke.sh SECONDS TARGET...: run each libFuzzer target for SECONDS on a scratch copy of its
# corpus, then replay every checked-in corpus file once. Fails on any crash, leak or timeout.
set -euo pipefail
secs=$1
shift
bin=build/fuzz/libfuzzer
work=build/fuzz/smoke
pass=0
fail=0
for t in "$@"; do
    corpus=fuzz/corpus/$t
    if [ ! -d "$corpus" ] || [ -z "$(ls -A "$corpus")" ]; then
        echo "fuzz-smoke: $t has no seed corpus in $corpus" >&2
        fail=$((fail + 1))
        continue
    fi
    rm -rf "${work:?}/$t" && mkdir -p "$work/$t"
    log=$work/$t.log
    if "$bin/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$work/$t-" "$work/$t" "$corpus" >"$log" 2>&1 &&
        "$bin/$t" -runs=1 "$corpus"/* >>"$log" 2>&1; then
        execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | head -1)
        echo "  fuzz   $t: ${secs}s, ${execs:-?} execs, $(ls "$corpus" | wc -l) seeds replayed, ok"
        pass=$((pass + 1))
    else
        echo "  fuzz   $t: FAILED (log: $log)" >&2
        tail -30 "$log" >&2
        fail=$((fail + 1))
    fi
done
echo "fuzz smoke: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
