#!/usr/bin/env bash
# run-integration.sh BUILD_DIR: the integration tests (pytest, real processes) against the
# binaries in BUILD_DIR. Debian's pytest is used: the python3 first on PATH may lack its packages.
set -euo pipefail
export ET_BUILD_DIR=$1
export TSAN_OPTIONS="suppressions=$(pwd)/tests/tsan.supp ${TSAN_OPTIONS:-}"
exec /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration "${@:2}"
