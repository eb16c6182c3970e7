#!/usr/bin/env bash
# install-bench-deps.sh: what bench/ needs beyond the tests: OpenSSH (the ssh -R peer; bench
# starts its own private sshd on 127.0.0.1) and matplotlib (plots). Idempotent, quiet.
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/install-deps.sh openssh-server openssh-client python3-matplotlib
