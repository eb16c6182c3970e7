#!/usr/bin/env bash
# install-bench-deps.sh: what bench/ needs beyond the tests: OpenSSH (the ssh -R peer; bench
# starts its own private sshd on 127.0.0.1) and matplotlib (make bench-plot). The system sshd
# that Debian's package would start on port 22 is kept from starting. Idempotent, quiet.
set -euo pipefail
scripts/install-deps.sh
pkgs=(openssh-server openssh-client python3-matplotlib)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install-bench-deps: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d 101: "do not start services" while the packages install.
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
