#!/usr/bin/env bash
# install-deps.sh [PACKAGE...]: install the Debian packages the build, tests and fuzzing need
# (and any PACKAGE given, e.g. by install-bench-deps.sh) when any is missing. No service a package
# would start (an sshd on port 22) is started. Idempotent; silent when everything is there.
set -euo pipefail

pkgs=(
    build-essential clang clang-format afl++ libclang-rt-dev
    android-libboringssl-dev libxxhash-dev libjansson-dev libcmocka-dev libinih-dev scdoc
    python3 python3-pytest python3-websockets curl wrk openssl iproute2 procps
    "$@"
)

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d exiting 101 means "do not start services" while the packages install.
policy=/usr/sbin/policy-rc.d
created=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    created=1
fi
trap '[ "$created" = 1 ] && $sudo rm -f "$policy"' EXIT
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
