//! Turns on tokio's `taskdump` feature on the targets where tokio supports it (Linux x86_64
//! and aarch64), and adds nothing elsewhere.
//!
//! Why a crate: leakcheck's `task-dumps` feature must build on every target, and a cargo
//! feature cannot ask for `tokio/taskdump` on some targets only; a dependency can. Under
//! `--cfg tokio_unstable`, tokio stops the build when `taskdump` is on for a target it cannot
//! trace, so leakcheck asks for it through this crate, whose tokio dependency is declared for
//! the supported targets alone. Use it through `leakcheck`'s `task-dumps` feature.
#![no_std]
