#!/usr/bin/env bash
# Runs Snorky's whole test suite on a Debian machine, installing what the tests need first
# (hiredis headers, a real redis-server, the Prometheus client parser the metrics tests check
# their output with). Safe to run again: installed packages are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(libhiredis-dev redis-server pkg-config python3 python3-prometheus-client)
missing=()
for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

swift build --build-tests
swift test --skip-build "$@"
