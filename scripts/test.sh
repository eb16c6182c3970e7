#!/usr/bin/env bash
# test.sh: the README's test command. Installs missing packages, then runs `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
exec make -j"$(nproc)" test "$@"
