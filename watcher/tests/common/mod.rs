//! Helpers shared by the watcher's integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use watcher::{Builder, Outcome, ProcessError, Processor, Status, Watcher};

/// Behaviour chosen by the file's contents:
/// `bad…` permanent error, `panic…` panics, `hang…` never returns, `flaky…` retryable error on
/// the first two calls, anything else succeeds. Counts calls per file name.
#[derive(Clone, Default)]
pub struct Scripted {
    pub calls: Arc<Mutex<HashMap<String, u32>>>,
}

impl Scripted {
    pub fn calls(&self, name: &str) -> u32 {
        self.calls.lock().unwrap().get(name).copied().unwrap_or(0)
    }
    pub fn total_calls(&self) -> u32 {
        self.calls.lock().unwrap().values().sum()
    }
}

impl Processor for Scripted {
    async fn process(&self, path: &Path, contents: Vec<u8>) -> Result<(), ProcessError> {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let n = {
            let mut c = self.calls.lock().unwrap();
            let n = c.entry(name).or_default();
            *n += 1;
            *n
        };
        if contents.starts_with(b"bad") {
            Err(ProcessError::permanent("bad contents"))
        } else if contents.starts_with(b"panic") {
            panic!("boom in processor");
        } else if contents.starts_with(b"hang") {
            std::future::pending::<()>().await;
            unreachable!()
        } else if contents.starts_with(b"flaky") && n < 3 {
            Err(ProcessError::retryable(format!("flaky attempt {n}")))
        } else {
            Ok(())
        }
    }
}

/// A builder with short, test-friendly timings.
pub fn builder(dir: &Path, p: Scripted) -> Builder {
    Watcher::builder(dir)
        .debounce(Duration::from_millis(20))
        .retry_backoff(Duration::from_millis(1))
        .shutdown_timeout(Duration::from_secs(5))
        .fsync(false)
        .processor(p)
}

pub fn write(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

/// Where `name` ended up: its outcome and status, asserting it is in exactly one place.
pub fn where_is(dir: &Path, name: &str) -> Option<(Outcome, Status)> {
    let mut found = Vec::new();
    for outcome in [Outcome::Processed, Outcome::Failed] {
        let d = dir.join(outcome.dir_name());
        if d.join(name).exists() {
            let s = Status::read(&watcher::status::status_path(&d.join(name)))
                .unwrap_or_else(|e| panic!("status of {name}: {e}"));
            assert_eq!(s.outcome, outcome);
            found.push((outcome, s));
        }
    }
    assert!(found.len() <= 1, "{name} is in both processed/ and failed/");
    if let Some(f) = found.pop() {
        assert!(!dir.join(name).exists(), "{name} is still in the inbox too");
        return Some(f);
    }
    None
}

pub fn status(dir: &Path, name: &str) -> Status {
    where_is(dir, name)
        .unwrap_or_else(|| panic!("{name} was not processed"))
        .1
}

pub const LONG: Duration = Duration::from_secs(20);
