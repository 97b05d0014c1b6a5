#!/usr/bin/env bash
# Installs the Debian packages listed in deploy/debian-packages.txt that are
# not installed yet: with apt-get as root, through sudo otherwise; does
# nothing (and needs no network) when every package is present.
# A line "COMMAND:PACKAGE" installs PACKAGE only when COMMAND is not on the
# PATH (for tools a machine may already have from elsewhere, e.g. kubectl
# or npm, whose Debian package would conflict with that copy).
set -euo pipefail
list=${1:-deploy/debian-packages.txt}
missing=()
while read -r pkg; do
    pkg=${pkg%%#*}
    pkg=${pkg// /}
    [ -n "$pkg" ] || continue
    if [[ $pkg == *:* ]]; then
        command -v "${pkg%%:*}" >/dev/null 2>&1 && continue
        pkg=${pkg#*:}
    fi
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = "installed" ] || missing+=("$pkg")
done < "$list"
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
