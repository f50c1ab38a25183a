#!/usr/bin/env bash
# Runs Snorky's whole test suite on a Debian machine, installing what the tests need first
# (hiredis headers, a real redis-server). Safe to run again: installed packages are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(libhiredis-dev redis-server pkg-config python3)
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

# Then fuzz the frame and envelope decoders for a fixed budget (its own sanitized build,
# about a minute on two cores, plus the budget). SNORKY_FUZZ_SECONDS=0 skips it; so does
# running a subset of the tests (any arguments).
fuzz_seconds="${SNORKY_FUZZ_SECONDS:-60}"
if [ $# -eq 0 ] && [ "$fuzz_seconds" != 0 ]; then
    ./scripts/fuzz.sh "$fuzz_seconds"
fi
