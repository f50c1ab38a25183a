#!/usr/bin/env bash
# Fuzzes Snorky's WebSocket frame handling and envelope decoding (the SnorkyFuzz target)
# with libFuzzer for a fixed time budget, starting from the committed seed corpus.
#
#   scripts/fuzz.sh [SECONDS] [LIBFUZZER-FLAGS...]     default: 60 seconds
#
# The sanitized build lives in its own scratch directory (.build-fuzz), so it never mixes
# with the normal one. Inputs that reach new code are kept in .build-fuzz/corpus (add the
# useful ones to Tests/Fuzz/corpus); a crash stops the run, saves the input under
# .build-fuzz/crashes/ and fails the script. To investigate one, run the plain build on it:
#   swift build --product SnorkyFuzz && .build/debug/SnorkyFuzz .build-fuzz/crashes/crash-...
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
scratch=.build-fuzz

swift build -c debug --product SnorkyFuzz --scratch-path "$scratch" \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -DSNORKY_FUZZ
mkdir -p "$scratch/corpus" "$scratch/crashes"

# The first corpus directory receives new inputs; the committed seeds are only read.
"$scratch/debug/SnorkyFuzz" \
    -max_total_time="$seconds" \
    -timeout=10 \
    -max_len=20000 \
    -dict=Tests/Fuzz/snorky.dict \
    -artifact_prefix="$scratch/crashes/" \
    -print_final_stats=1 \
    "$@" \
    "$scratch/corpus" Tests/Fuzz/corpus
