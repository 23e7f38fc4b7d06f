#!/usr/bin/env bash
# What CI runs, in order: formatting, lints, the README's test command (and the same suite under
# cargo nextest, a process per test), the benches as smoke tests, the README's demo, and the loom
# models with their broken variants. Everything it needs comes from crates.io through cargo or
# with the machine (cargo-nextest); nothing is installed by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

step() { printf '\n== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p leakcheck --no-default-features --all-targets -- -D warnings

# The README's test command: unit, integration and doc tests of the whole workspace.
step "cargo test --workspace"
cargo test --workspace

# The same suite with a process per test (cargo-nextest comes with this kind of machine): the
# attributes run their tests in place there, and every count must hold as under cargo test.
step "cargo nextest run --workspace"
cargo nextest run --workspace

step "leakcheck without its tokio feature"
cargo test -p leakcheck --no-default-features

# A crate with no tokio must not build tokio for leakcheck's defaults (an async
# #[leakcheck::test] uses the test crate's own tokio).
step "leakcheck's default features build no tokio"
if cargo tree -p leakcheck -e normal,build --prefix none | grep '^tokio '; then
  echo "leakcheck's default features pull in tokio" >&2
  exit 1
fi

# Creation sites (feature origins, on by default) run in every suite above; the hooks' bench
# runs once, and the earlier feature name still builds.
step "creation sites (feature origins)"
cargo clippy -p leakcheck --features spawn-sites --all-targets -- -D warnings
cargo bench --features origins --bench origins -- --test

# Task spawn sites need tokio's unstable hooks, and await points tokio's task dumps (feature
# task-dumps). RUSTFLAGS changes every crate's build, so it gets its own target directory (the
# main one is not rebuilt) and only leakcheck and one leak test of the watcher are built.
step "--cfg tokio_unstable --cfg tokio_taskdump: leakcheck::instrument, task dumps"
(
  export RUSTFLAGS="--cfg tokio_unstable --cfg tokio_taskdump"
  export RUSTDOCFLAGS="$RUSTFLAGS"
  export CARGO_TARGET_DIR=target/tokio-unstable
  cargo clippy -p leakcheck --features tokio,task-dumps --all-targets -- -D warnings
  cargo test -p leakcheck --features tokio,task-dumps
  # The watcher's leaky fixture named by the lines that spawned its routines.
  cargo test --test watcher_leaks leaky_fixture
  cargo bench --features task-dumps --bench task_dump -- --test
)

# musl has no `dlsym(RTLD_NEXT)` for the hooks to forward through: there the creation hooks
# compile out and checks count without sites. Its tests must at least build (`pthread_t` is a
# pointer there); checked where the machine has the target (nothing is installed here).
if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
  step "leakcheck for x86_64-unknown-linux-musl builds (all targets)"
  cargo check -p leakcheck --target x86_64-unknown-linux-musl --all-targets
fi

step "benches run once each (criterion --test)"
cargo bench --workspace -- --test

# The README's other quick-start command: the clean watcher passes, the leaky fixture is
# caught (the demo exits non-zero otherwise).
step "cargo run --release --example demo"
cargo run --release --example demo

# The README's heap, child-process and probe report: caught, then fixed (exits non-zero
# otherwise).
step "cargo run --release --example heap_and_more"
cargo run --release --example heap_and_more

# The CLI's throughput script (benches/cli_throughput.sh) on 40 files, once: checks that the
# script and the release CLI work; its figures mean nothing here.
step "benches/cli_throughput.sh --smoke"
bash benches/cli_throughput.sh --smoke

# The soak check (benches/soak.sh) for 4 s: the release CLI with --metrics-addr, a file every
# 50 ms, /metrics scraped by the example; checks the endpoint and the script, not the trend.
step "benches/soak.sh --smoke"
bash benches/soak.sh --smoke

if [ -f ci/loom.sh ]; then
  step "loom models"
  bash ci/loom.sh
fi

step "done"
