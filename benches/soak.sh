#!/usr/bin/env bash
# The soak check: the release watcher CLI in watch mode for DURATION seconds with a file every
# 50 ms, its /metrics endpoint scraped every 5 s; fails (exit 1) if threads, fds, alive tokio
# tasks or resident memory trend upward after the warm-up, each series judged on its own by
# the segment-minima rule leakcheck applies to the heap (see watcher/examples/soak.rs).
#
#   benches/soak.sh [DURATION_SECS] [-- SOAK_ARGS...]   # default 600 s; writes target/soak.csv
#   benches/soak.sh --smoke                             # 4 s: checks the mechanics (CI)
#
# SOAK_ARGS: --every-ms MS, --scrape SECS, --warmup SECS, --csv FILE (see the example).
# benches/soak_plot.py plots the CSV (matplotlib).
set -euo pipefail
cd "$(dirname "$0")/.."

args=()
case "${1:-}" in
  --smoke) args=(--smoke); shift ;;
  ''|--) args=(--duration 600 --csv target/soak.csv) ;;
  *[!0-9]*) echo "usage: $0 [DURATION_SECS | --smoke] [-- SOAK_ARGS...]" >&2; exit 2 ;;
  *) args=(--duration "$1" --csv target/soak.csv); shift ;;
esac
[ "${1:-}" = "--" ] && shift

cargo build --release --quiet -p watcher --bin watcher --example soak
exec target/release/examples/soak --watcher target/release/watcher "${args[@]}" "$@"
