#!/usr/bin/env bash
# dev.sh: the README's run command. Installs missing packages, builds, then runs the product on
# loopback: `edged --dev` (self-signed certificate and token key in memory), a demo web server
# as the origin's local service, and `originctl` connected with the line edged prints. Fetches
# the demo page through the tunnel to show it works, then keeps running until Ctrl-C.
#   ET_DEV_ONCE=1 scripts/dev.sh   stop after showing the page (for scripts)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
make -j"$(nproc)" all >/dev/null
B=$(pwd)/build/current
HTTP_PORT=${ET_DEV_HTTP_PORT:-8080}
ORIGIN_PORT=${ET_DEV_ORIGIN_PORT:-3000}
TUNNEL=${ET_DEV_TUNNEL:-127.0.0.1:7443}
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

wait_for() { # wait_for FILE REGEX WHAT
    for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "dev.sh: $3 did not start; its log:" >&2
    cat "$1" >&2
    exit 1
}

python3 -m http.server "$ORIGIN_PORT" --bind 127.0.0.1 --directory scripts/demo \
    >"$tmp/origin.log" 2>&1 &
pids+=($!)
"$B/edged" --dev --dev-port "$ORIGIN_PORT" --http "127.0.0.1:$HTTP_PORT" --tunnel "$TUNNEL" \
    >"$tmp/edged.out" 2>"$tmp/edged.log" &
pids+=($!)
wait_for "$tmp/edged.out" '^originctl connect ' "edged --dev"
cat "$tmp/edged.out"
read -r -a line < <(grep '^originctl connect ' "$tmp/edged.out")
"$B/${line[0]}" "${line[@]:1}" 2>"$tmp/originctl.log" &
pids+=($!)
wait_for "$tmp/originctl.log" 'event=ready' "originctl"
for _ in $(seq 100); do # the demo origin listens?
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$ORIGIN_PORT/" && break
    sleep 0.1
done
echo "--- GET http://localhost:$HTTP_PORT/ through the tunnel:"
curl -sS --max-time 10 "http://localhost:$HTTP_PORT/"
echo "---"
if [ "${ET_DEV_ONCE:-0}" = 1 ]; then
    exit 0
fi
echo "Running (edged, originctl, demo origin). Logs in $tmp. Ctrl-C to stop."
wait "${pids[1]}"
