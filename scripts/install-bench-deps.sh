#!/usr/bin/env bash
# install-bench-deps.sh: what bench/ needs beyond the tests: OpenSSH (the ssh -R peer; bench
# starts its own private sshd on 127.0.0.1), nginx (the origin of the request bench, started by
# bench/requests.py with its own config and prefix, never the system service) and matplotlib
# (plots). Idempotent, quiet.
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/install-deps.sh openssh-server openssh-client nginx wrk python3-matplotlib
