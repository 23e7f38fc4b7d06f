//! One name per file: a file is moved to `processed/` under its own name, byte for byte, and
//! the escape that names it in status records, the ledger and logs is one-to-one, so two inbox
//! names never share a key, a claim or a status record, and a run processes every file it sees.
//! The pair that broke it: `bad<0xff>name.txt` (not UTF-8) and a file literally named
//! `bad\xffname.txt`, whose names escaped alike.
#![cfg(unix)]
mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use common::*;
use watcher::status::status_path;
use watcher::{Mode, Outcome, Status};

/// `bad<0xff>name.txt`: not UTF-8.
const RAW: &[u8] = b"bad\xffname.txt";
/// The UTF-8 name that reads like `RAW`'s escape.
const LITERAL: &str = r"bad\xffname.txt";

/// The status of the file `name` in `processed/`, which must be there under that very name
/// (and not in the inbox any more).
fn processed(d: &Path, name: &OsStr) -> Status {
    assert!(!d.join(name).exists(), "{name:?} is still in the inbox");
    let moved = d.join("processed").join(name);
    assert!(
        moved.exists(),
        "{name:?} is not in processed/ under its own name"
    );
    Status::read(&status_path(&moved)).unwrap_or_else(|e| panic!("status of {name:?}: {e}"))
}

/// Every file in `processed/`, as raw names.
fn listing(d: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<Vec<u8>> = std::fs::read_dir(d.join("processed"))
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    names.sort();
    names
}

/// Both files of the pair are processed by the one `--once` run that sees them, each under its
/// own name with a status record of its own. The command is given each real path.
#[test]
fn cli_once_processes_a_name_that_is_not_utf8_and_the_name_its_escape_reads_as() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join(OsStr::from_bytes(RAW)), b"raw").unwrap();
    std::fs::write(d.join(LITERAL), b"literal").unwrap();
    // The command copies the file it is given beside the inbox, so both contents must arrive.
    let aside = tempfile::tempdir().unwrap();
    let script = format!(r#"cat "$1" >> '{}'"#, aside.path().join("seen").display());
    let (code, err) = cli_on(d, ["--once", "--", "sh", "-c", &script, "sh"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("summary: processed 2, failed 0"), "{err}");
    let seen = std::fs::read_to_string(aside.path().join("seen")).unwrap();
    assert_eq!(seen.len(), "rawliteral".len(), "{seen}");

    let raw = processed(d, OsStr::from_bytes(RAW));
    let literal = processed(d, OsStr::new(LITERAL));
    assert_eq!(raw.outcome, Outcome::Processed);
    assert_eq!(literal.outcome, Outcome::Processed);
    // One-to-one: the records name them apart.
    assert_eq!(
        (raw.file.as_str(), raw.moved_to.as_str()),
        (LITERAL, LITERAL)
    );
    let escaped = r"bad\\xffname.txt";
    assert_eq!(
        (literal.file.as_str(), literal.moved_to.as_str()),
        (escaped, escaped)
    );
    assert_eq!(
        std::fs::read(d.join("processed").join(OsStr::from_bytes(RAW))).unwrap(),
        b"raw"
    );
    assert_eq!(
        std::fs::read(d.join("processed").join(LITERAL)).unwrap(),
        b"literal"
    );
    // Nothing else: no suffixed copy, no file under an escape.
    let status = |n: &[u8]| [n, b".status.json"].concat();
    let mut want = vec![
        RAW.to_vec(),
        status(RAW),
        LITERAL.as_bytes().to_vec(),
        status(LITERAL.as_bytes()),
    ];
    want.sort();
    assert_eq!(listing(d), want);
    // The escapes name them in the text log too, each once.
    for name in [LITERAL, escaped] {
        let line = format!("processed {name} in");
        assert_eq!(err.matches(&line).count(), 1, "{line:?} in {err}");
    }
    // A second run finds nothing to do.
    let (code, err) = cli_on(d, ["--once", "--", "true"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("summary: processed 0, failed 0"), "{err}");
}

/// A name that is valid UTF-8 but holds a backslash keeps it: `processed/a\b.txt`, its status
/// `a\b.txt.status.json`, the record naming it `a\\b.txt`; and a file dropped again under that
/// name gets `a\b.txt.<run>`. The library's `FileOutcome` gives the real path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_utf8_name_with_a_backslash_keeps_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let name = r"a\b.txt";
    let outcomes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = outcomes.clone();
    let on_file = move |f: &watcher::FileOutcome| seen.lock().unwrap().push(f.clone());
    for round in 0..2 {
        write(d, name, b"x");
        let cfg = builder(d, Scripted::default())
            .mode(Mode::Once)
            .on_file(on_file.clone())
            .build()
            .unwrap();
        let (w, _) = run_to_end(cfg).await;
        assert_eq!(w.metrics().processed, 1, "round {round}");
    }
    let s = processed(d, OsStr::new(name));
    assert_eq!(
        (s.file.as_str(), s.moved_to.as_str()),
        (r"a\\b.txt", r"a\\b.txt")
    );
    let outcomes = outcomes.lock().unwrap();
    assert_eq!(outcomes[0].name, r"a\\b.txt");
    assert_eq!(outcomes[0].moved_to, d.join("processed").join(name));
    // The second file, under the taken name: `a\b.txt.<run>`, the record saying so.
    let again = outcomes[1].moved_to.clone();
    let again_name = again.file_name().unwrap().to_str().unwrap().to_owned();
    let run = again_name.strip_prefix(r"a\b.txt.").expect(&again_name);
    let s2 = Status::read(&status_path(&again)).unwrap();
    assert_eq!(s2.run.to_string(), run);
    assert_eq!(s2.moved_to, format!(r"a\\b.txt.{run}"));
    assert_eq!(
        listing(d).len(),
        4,
        "two files, two statuses: {:?}",
        listing(d)
    );
}

/// A crash with odd names in flight: the ledger holds an in-flight run of the name that is not
/// UTF-8 and of the one that reads like its escape, and a decided run of a name with a
/// backslash, each file still in the inbox. The restart runs the first two again (each marked
/// interrupted, each once) and finishes the third from the ledger without running it; every
/// file lands under its own name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_crash_finishes_odd_names_each_under_its_own_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("processed")).unwrap();
    let decided_name = r"dec\ided.txt";
    for name in [
        OsStr::from_bytes(RAW),
        OsStr::new(LITERAL),
        OsStr::new(decided_name),
    ] {
        std::fs::write(d.join(name), b"x").unwrap();
    }
    let key = |n: &OsStr| watcher::escape_name(n);
    {
        let ledger = watcher::ledger::Ledger::open(d).unwrap();
        ledger
            .mark_in_flight(&key(OsStr::from_bytes(RAW)), 1)
            .unwrap();
        ledger.mark_in_flight(&key(OsStr::new(LITERAL)), 2).unwrap();
        let k = key(OsStr::new(decided_name));
        let status = Status {
            file: k.clone(),
            moved_to: k,
            outcome: Outcome::Processed,
            attempts: 1,
            error: None,
            interrupted: false,
            run: 3,
            started_at: "2024-01-01T00:00:00Z".into(),
            finished_at: "2024-01-01T00:00:01Z".into(),
        };
        ledger.mark_decided(&status, None).unwrap();
    }
    let p = Scripted::default();
    let (w, _) = run_to_end(builder(d, p.clone()).mode(Mode::Once).build().unwrap()).await;
    assert_eq!(w.metrics().processed, 2);
    for name in [OsStr::from_bytes(RAW), OsStr::new(LITERAL)] {
        let s = processed(d, name);
        assert!(s.interrupted, "{name:?}: {s:?}");
        assert_eq!(s.attempts, 1);
    }
    // `Scripted` counts calls by the lossy name: the two are apart there too.
    assert_eq!(p.calls("bad\u{fffd}name.txt"), 1);
    assert_eq!(p.calls(LITERAL), 1);
    assert_eq!(p.calls(decided_name), 0, "a decided file ran again");
    let s = processed(d, OsStr::new(decided_name));
    assert_eq!(s.run, 3);
    let left = watcher::ledger::Ledger::open(d).unwrap().entries();
    assert!(left.is_empty(), "{left:?}");
}
