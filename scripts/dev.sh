#!/usr/bin/env bash
# dev.sh: the README's run command. Installs missing packages, builds, and runs the product on
# loopback. Until `edged --dev` lands (issue #4) it builds both binaries and shows what they are.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
make -j"$(nproc)" all
build/current/edged --version
build/current/originctl --version
echo "dev.sh: the tunnel itself (edged --dev with a demo origin) arrives with issues #3 and #4" >&2
