//! Every bad input of the builder, asserted by message.
mod common;

use std::time::Duration;

use common::Scripted;
use watcher::{ConfigError, Mode, Watcher};

fn err(f: impl FnOnce(watcher::Builder) -> watcher::Builder) -> String {
    let dir = tempfile::tempdir().unwrap();
    let b = Watcher::builder(dir.path()).processor(Scripted::default());
    f(b).build().unwrap_err().to_string()
}

#[test]
fn defaults_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    let c = Watcher::builder(dir.path())
        .processor(Scripted::default())
        .build()
        .unwrap();
    assert_eq!(c.workers(), 2);
    assert_eq!(c.mode(), Mode::Watch);
    assert_eq!(c.dir(), dir.path().canonicalize().unwrap());
}

#[test]
fn out_of_range_values_name_field_value_and_range() {
    let cores = watcher::config::cores();
    let max = 4 * cores;
    assert_eq!(
        err(|b| b.workers(0)),
        format!("workers = 0 is out of range (allowed: 1 ..= {max})")
    );
    assert_eq!(
        err(|b| b.workers(max + 1)),
        format!(
            "workers = {} is out of range (allowed: 1 ..= {max})",
            max + 1
        )
    );
    assert_eq!(
        err(|b| b.debounce(Duration::from_millis(5))),
        "debounce = 5ms is out of range (allowed: 10ms ..= 5s)"
    );
    assert_eq!(
        err(|b| b.debounce(Duration::from_secs(6))),
        "debounce = 6s is out of range (allowed: 10ms ..= 5s)"
    );
    assert_eq!(
        err(|b| b.mode(Mode::Poll(Duration::from_millis(50)))),
        "poll = 50ms is out of range (allowed: 100ms ..= 1h)"
    );
    assert_eq!(
        err(|b| b.mode(Mode::Poll(Duration::from_secs(3601)))),
        "poll = 1h 1s is out of range (allowed: 100ms ..= 1h)"
    );
    assert_eq!(
        err(|b| b.max_file_size(0)),
        "max_file_size = 0 bytes is out of range (allowed: 1 bytes ..= 1073741824 bytes)"
    );
    assert_eq!(
        err(|b| b.cleanup_after(Duration::from_secs(60))),
        "cleanup_after = 1m is out of range (allowed: 1h ..= 30days)"
    );
    assert_eq!(
        err(|b| b.cleanup_after(Duration::from_secs(30 * 86400 + 1))),
        "cleanup_after = 30days 1s is out of range (allowed: 1h ..= 30days)"
    );
    assert_eq!(
        err(|b| b.cleanup_every(Duration::ZERO)),
        "cleanup_every = 0s is out of range (allowed: 1ms ..= 30days)"
    );
    assert_eq!(
        err(|b| b.file_state_cleanup_every(Duration::ZERO)),
        "file_state_cleanup_every = 0s is out of range (allowed: 1ms ..= 1day)"
    );
    assert_eq!(
        err(|b| b.shutdown_timeout(Duration::ZERO)),
        "shutdown_timeout = 0s is out of range (allowed: 1ms ..= 10m)"
    );
    assert_eq!(
        err(|b| b.retries(101)),
        "retries = 101 is out of range (allowed: 0 ..= 100)"
    );
    assert_eq!(
        err(|b| b.retry_backoff(Duration::from_secs(61))),
        "retry_backoff = 1m 1s is out of range (allowed: 1ms ..= 1m)"
    );
    assert_eq!(
        err(|b| b.queue_capacity(0)),
        "queue_capacity = 0 is out of range (allowed: 1 ..= 65536)"
    );
}

#[test]
fn bad_pattern_and_missing_processor() {
    assert!(
        err(|b| b.pattern("[unclosed")).starts_with("pattern \"[unclosed\" is not a valid glob: ")
    );
    let dir = tempfile::tempdir().unwrap();
    let e = Watcher::builder(dir.path()).build().unwrap_err();
    assert!(matches!(e, ConfigError::MissingProcessor));
    assert_eq!(e.to_string(), "no processor configured");
}

#[test]
fn bad_directories() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let e = Watcher::builder(&missing)
        .processor(Scripted::default())
        .build()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("directory {} does not exist", missing.display())
    );

    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let e = Watcher::builder(&file)
        .processor(Scripted::default())
        .build()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{} is not a directory", file.display())
    );

    // Unreadable: mode 000 (root ignores permissions, so only assert when it applies).
    use std::os::unix::fs::PermissionsExt;
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let readable = std::fs::read_dir(&locked).is_ok();
    let r = Watcher::builder(&locked)
        .processor(Scripted::default())
        .build();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    if !readable {
        let e = r.unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("directory {} is not readable: ", locked.display())),
            "{e}"
        );
    }
}
