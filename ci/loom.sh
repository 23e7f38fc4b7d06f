#!/usr/bin/env bash
# Loom models of the watcher's shutdown coordinator (watcher/shutdown/tests/loom.rs).
#
# 1. Runs every model against the real coordinator: they must all pass.
# 2. For every deliberately broken coordinator (`cfg(coordinator_bug = "<name>")`), runs the
#    model that is about that bug: it must FAIL. A variant whose model passes is a model that
#    proves nothing, and fails this script ("NOT CAUGHT: <name>").
#
# The variants are selected with COORDINATOR_BUG=<name> (read by watcher/shutdown/build.rs), so
# RUSTFLAGS stay the same and each variant rebuilds only the coordinator, not loom. Every run
# is under `timeout`; a loom deadlock is reported by loom itself, a timeout would be a livelock.
#
# Env: LOOM_MAX_PREEMPTIONS (default 3), LOOM_TARGET_ROOT (default <repo>/target),
#      LOOM_RUN_TIMEOUT seconds per model run (default 300), LOOM_BUILD_TIMEOUT (default 600).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
target_root="${LOOM_TARGET_ROOT:-$repo/target}"
run_timeout="${LOOM_RUN_TIMEOUT:-300}"
build_timeout="${LOOM_BUILD_TIMEOUT:-600}"

# variant name -> the model that must catch it
bugs=(
    "register_ignores_closed close_racing_register"  # register does not check the stage is closed
    "lost_wakeup close_racing_task_exit"             # join waker stored after the emptiness check, unlocked
    "skip_wake close_racing_task_exit"               # last permit dropped without waking the leader
    "racy_leader concurrent_and_repeated_close"      # leader election is check-then-set
    "follower_returns_early concurrent_and_repeated_close" # followers return the report in progress
    "cancel_all_skips_stage cancel_all_then_drop"    # cancel_all forgets Background
    "cancel_all_cycle cancel_all_then_drop"          # cancel_all makes the state own itself (Arc leak)
    "no_abort_on_expiry budget_exhausted_aborts"     # budget expiry moves on without aborting
    "stages_reversed stage_order"                    # stages closed Background first
    "stop_all_first stage_order"                     # every stage stopped up front
    "chain_early chained_stages"                     # a stopper moves on before its stage is empty
    "chain_no_wake chained_stages"                   # the last chained stage does not wake the caller
    "abort_during_chained_stop chained_stages_with_budget" # expiry moves on while a chained stop runs
)

# cargo_loom <timeout s> <bug variant or ""> <cargo test args...>
cargo_loom() {
    local secs="$1" bug="$2"
    shift 2
    timeout "$secs" env CARGO_TARGET_DIR="$target_root/loom" RUSTFLAGS="--cfg loom" \
        COORDINATOR_BUG="$bug" cargo test --quiet --release -p watcher-shutdown --test loom "$@"
}

# why <log>: the first panic message of a failed run, on one line
why() {
    grep -m1 -A1 "panicked at" "$1" | tr '\n' ' ' |
        sed -E 's/^.*panicked at //; s|/[^ ]*/(loom-[0-9.]+)/|\1/|' | cut -c1-150 || echo "see $1"
}

echo "== loom models, LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS"
cargo_loom "$build_timeout" "" --no-run
start=$SECONDS
cargo_loom "$run_timeout" ""
echo "== models passed in $((SECONDS - start)) s"

failed=0
for entry in "${bugs[@]}"; do
    read -r name model <<<"$entry"
    cargo_loom "$build_timeout" "$name" --no-run
    log="$target_root/loom/bug-$name.log"
    set +e
    cargo_loom "$run_timeout" "$name" -- --exact "$model" >"$log" 2>&1
    rc=$?
    set -e
    case $rc in
        0) echo "NOT CAUGHT: $name (model $model passed)"; failed=1 ;;
        101) echo "caught: $name (model $model failed: $(why "$log"))" ;;
        124) echo "caught: $name (model $model hung; killed after ${run_timeout}s)" ;;
        *) echo "ERROR: $name: model $model exited with $rc, see $log"; failed=1 ;;
    esac
done

if [ "$failed" -ne 0 ]; then
    echo "loom: some bug variants were not caught" >&2
    exit 1
fi
echo "loom: all models pass and every bug variant is caught"
