//! One name for "this build records creation sites": the `origins` feature (or its earlier name
//! `spawn-sites`) on Linux with a dynamically linked glibc and no sanitizer. The hook forwards
//! through `dlsym(RTLD_NEXT)`, which static binaries and musl do not have; a sanitizer's runtime
//! intercepts `pthread_create` itself, and a second definition in the executable would take
//! its place. Elsewhere the feature compiles and records nothing.
//!
//! The cfg is `origins`: creations are recorded, classified (process globals, unnamed threads,
//! `ignore_created_by`) and shown in a report (`spawned at FILE:LINE`, `opened at …`).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(origins)");
    println!("cargo::rustc-check-cfg=cfg(tokio_unstable)");
    println!("cargo::rustc-check-cfg=cfg(tokio_taskdump)");
    println!("cargo::rustc-check-cfg=cfg(task_dumps)");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let feature = std::env::var_os("CARGO_FEATURE_ORIGINS").is_some();
    let linux_gnu = env("CARGO_CFG_TARGET_OS") == "linux" && env("CARGO_CFG_TARGET_ENV") == "gnu";
    let static_crt = env("CARGO_CFG_TARGET_FEATURE")
        .split(',')
        .any(|f| f == "crt-static");
    // `-Zsanitizer=address` (and thread, memory, leak...) sets `cfg(sanitize = "...")`.
    let sanitized = !env("CARGO_CFG_SANITIZE").is_empty();
    if feature && linux_gnu && !static_crt && !sanitized {
        println!("cargo::rustc-cfg=origins");
    }
    // Task dumps (feature `task-dumps`): tokio's `Handle::dump`, which tokio builds under
    // `--cfg tokio_unstable` on Linux x86_64 and aarch64 (among others); the contract also asks
    // for `--cfg tokio_taskdump`, the flag earlier tokios wanted, so that one RUSTFLAGS line
    // turns dumps on for every tokio.
    let has = |cfg: &str| std::env::var_os(format!("CARGO_CFG_{}", cfg.to_uppercase())).is_some();
    let dump_arch = matches!(env("CARGO_CFG_TARGET_ARCH").as_str(), "x86_64" | "aarch64");
    if std::env::var_os("CARGO_FEATURE_TASK_DUMPS").is_some()
        && has("tokio_unstable")
        && has("tokio_taskdump")
        && env("CARGO_CFG_TARGET_OS") == "linux"
        && dump_arch
    {
        println!("cargo::rustc-cfg=task_dumps");
    }
}
