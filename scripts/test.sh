#!/usr/bin/env bash
# Runs Snorky's whole test suite on a Debian machine, installing what the tests need first
# (hiredis headers, a real redis-server, iproute2's ss, nginx for the two-node deploy test, systemd's
# systemd-analyze for the unit file, Node.js for the JavaScript client's unit tests,
# Chromium, its driver and Selenium for the browser tests, the Prometheus client parser the
# metrics tests check their output with). Safe to run again: installed packages are
# skipped. Arguments are passed to `swift test`.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(libhiredis-dev redis-server pkg-config python3 iproute2 nginx systemd chromium chromium-driver python3-selenium python3-prometheus-client)
# Any Node.js with node:test will do (Debian 12's is 18); keep one installed another way.
command -v node >/dev/null 2>&1 || packages+=(nodejs)
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

# The JavaScript client's unit tests (no build needed).
node --test clients/js/tests/*.test.js

swift build --build-tests
swift test --skip-build "$@"

# The client and the demo page in two headless Chromium sessions against a real 2-worker
# cluster. Debian's python3-selenium is installed for the system Python.
python=python3
[ -x /usr/bin/python3 ] && python=/usr/bin/python3
SNORKY_BIN="$(swift build --show-bin-path)/snorky" "$python" clients/js/tests/test_browser.py

# Then fuzz the frame and envelope decoders for a fixed budget (its own sanitized build,
# about a minute on two cores, plus the budget). SNORKY_FUZZ_SECONDS=0 skips it; so does
# running a subset of the tests (any arguments).
fuzz_seconds="${SNORKY_FUZZ_SECONDS:-60}"
if [ $# -eq 0 ] && [ "$fuzz_seconds" != 0 ]; then
    ./scripts/fuzz.sh "$fuzz_seconds"
fi
