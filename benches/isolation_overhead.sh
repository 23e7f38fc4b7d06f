#!/usr/bin/env bash
# What running a test in a process of its own costs: the same 64 small tests
# (harness/tests/isolation_overhead.rs: a thread spawned and joined, a file opened and closed) as plain
# #[test]s under cargo test, as #[leakcheck::test]s under cargo test (each re-runs the test
# binary for itself), and as the plain ones under cargo nextest (a process per test), all in
# the same run, interleaved round by round.
#
# Per-test cost is a slope: (time for 64 tests − time for 1 test) / 63, so that what a run
# pays once (cargo, nextest's listing, libtest's start-up) is left out. Medians of ROUNDS.
#
#   bash benches/isolation_overhead.sh            # ROUNDS=7 THREADS="1 2"
#   ROUNDS=3 bash benches/isolation_overhead.sh   # quicker
#
# Prints a table; the figures in BENCHMARKS.md come from it.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-7}
THREADS=${THREADS:-"1 $(nproc)"}
N=64

bin=$(cargo test -p leakcheck --test isolation_overhead --no-run --message-format=json 2>/dev/null |
  grep -o '"executable":"[^"]*isolation_overhead[^"]*"' | tail -1 | cut -d'"' -f4)
[ -x "$bin" ] || { echo "could not build harness/tests/isolation_overhead.rs" >&2; exit 1; }
cargo nextest --version >/dev/null 2>&1 || { echo "cargo-nextest is needed" >&2; exit 1; }
unset RUST_TEST_THREADS NEXTEST_EXECUTION_MODE LEAKCHECK_ISOLATED

# Milliseconds that a command takes; it must succeed.
ms() {
  local t0 t1
  t0=$(date +%s%N)
  "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000))
}

# libtest filters: `plain::` matches all 64, `plain::t00` exactly one (not --exact, which
# would run an attribute's test in place).
plain() { ms "$bin" --ignored "plain::$1" --test-threads "$2"; }
attr() { ms "$bin" --ignored "attr::$1" --test-threads "$2"; }
nextest() {
  local filter="test(/^plain::/)"
  [ -n "$1" ] && filter="test(=plain::$1)"
  ms cargo nextest run -p leakcheck --test isolation_overhead --run-ignored only -E "$filter" \
    --test-threads "$2" --no-fail-fast --status-level none --final-status-level none
}
nextest_attr() {
  local filter="test(/^attr::/)"
  [ -n "$1" ] && filter="test(=attr::$1)"
  ms cargo nextest run -p leakcheck --test isolation_overhead --run-ignored only -E "$filter" \
    --test-threads "$2" --no-fail-fast --status-level none --final-status-level none
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A samples
for t in $THREADS; do
  for ((r = 0; r < ROUNDS; r++)); do
    for kind in plain attr nextest nextest_attr; do
      all=$($kind "" "$t")
      one=$($kind t00 "$t")
      # µs per test, as a slope from 1 to N tests
      samples[$kind.$t]+="$(((all - one) / (N - 1))) "
    done
  done
done

# One process's start, for "where the time goes".
true_us=$(for _ in $(seq 21); do ms /bin/true; done | median)
list_us=$(for _ in $(seq 21); do ms "$bin" --list; done | median)
alone_us=$(for _ in $(seq 21); do ms "$bin" --exact attr::t00 --ignored --test-threads 1; done | median)
plain_alone_us=$(for _ in $(seq 21); do ms "$bin" --exact plain::t00 --ignored --test-threads 1; done | median)

printf '\nmachine: %s cores, %s; %s\n' "$(nproc)" "$(uname -sr)" "$(rustc --version)"
printf 'test binary: %s (%s MB)\n' "$bin" "$(($(stat -c %s "$bin") / 1000000))"
printf '%s rounds; µs per test (slope 1 → %s tests), median\n\n' "$ROUNDS" "$N"
printf '| test threads | plain #[test] | #[leakcheck::test] | isolation overhead | nextest, plain | nextest per-test cost | nextest, attribute in place |\n'
printf '|---|---|---|---|---|---|---|\n'
for t in $THREADS; do
  p=$(tr ' ' '\n' <<<"${samples[plain.$t]}" | grep . | median)
  a=$(tr ' ' '\n' <<<"${samples[attr.$t]}" | grep . | median)
  n=$(tr ' ' '\n' <<<"${samples[nextest.$t]}" | grep . | median)
  na=$(tr ' ' '\n' <<<"${samples[nextest_attr.$t]}" | grep . | median)
  printf '| %s | %s | %s | **%s** | %s | **%s** | %s |\n' "$t" "$p" "$a" "$((a - p))" "$n" "$((n - p))" "$na"
done
printf '\none process, µs (median of 21): /bin/true %s; the test binary --list %s;\n' "$true_us" "$list_us"
printf '  --exact one plain test %s; --exact one #[leakcheck::test] (runs in place) %s\n' "$plain_alone_us" "$alone_us"
