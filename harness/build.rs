//! One name for "this build records creation sites": the `origins` feature (or its former name
//! `spawn-sites`, which enables it) on Linux with a dynamically linked glibc (the hooks forward
//! through `dlsym(RTLD_NEXT)`, which static binaries and musl do not have). Elsewhere the
//! feature compiles and records nothing.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(spawn_sites)");
    println!("cargo::rustc-check-cfg=cfg(tokio_unstable)");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let feature = std::env::var_os("CARGO_FEATURE_ORIGINS").is_some();
    let linux_gnu = env("CARGO_CFG_TARGET_OS") == "linux" && env("CARGO_CFG_TARGET_ENV") == "gnu";
    let static_crt = env("CARGO_CFG_TARGET_FEATURE")
        .split(',')
        .any(|f| f == "crt-static");
    if feature && linux_gnu && !static_crt {
        println!("cargo::rustc-cfg=spawn_sites");
    }
}
