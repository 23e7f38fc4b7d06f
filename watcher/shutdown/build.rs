//! `COORDINATOR_BUG=<name>` builds a deliberately broken coordinator, for `ci/loom.sh` only:
//! each loom model must reject the bug it is about. Passing it through the environment instead
//! of RUSTFLAGS rebuilds this crate alone, not loom and its dependencies, for every variant.
fn main() {
    println!("cargo:rerun-if-env-changed=COORDINATOR_BUG");
    if let Ok(bug) = std::env::var("COORDINATOR_BUG") {
        if !bug.is_empty() {
            println!("cargo:rustc-cfg=coordinator_bug=\"{bug}\"");
        }
    }
}
