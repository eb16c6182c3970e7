#!/usr/bin/env bash
# install-deps.sh: install the Debian packages the build, tests, fuzzing and bench need, when any
# is missing. Idempotent; silent when everything is already there.
set -euo pipefail

pkgs=(
    build-essential clang clang-format afl++ libclang-rt-dev
    android-libboringssl-dev libxxhash-dev libjansson-dev libcmocka-dev
    python3 python3-pytest python3-websockets curl wrk openssl iproute2 procps
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
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
