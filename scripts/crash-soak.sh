#!/usr/bin/env bash
# The kill -9 loop of tests/crash_loop.rs, for much longer than the test
# suite runs it: ROUNDS (default 1000) random kills under load, each
# followed by recovery, a content check and fsck. Prints the seed so a
# failure can be replayed with ARTFS_CRASH_SEED=<seed>.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-1000}"
ARTFS_CRASH_ROUNDS="$ROUNDS" cargo test --release --test crash_loop -- --nocapture
