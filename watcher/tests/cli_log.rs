//! What the CLI says on stderr: one line per file as it finishes, a summary, `--quiet`, and
//! `--log-format json` (every line a JSON object). Lines are parsed, not searched.
#![cfg(unix)]
mod common;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{wait_until, write, BIN};
use serde_json::Value;

/// The command: fails (exit 3, a two-line stderr) on files whose contents start with "bad".
const SCRIPT: &str =
    r#"if grep -q '^bad' "$1"; then printf 'first\ncannot handle it\n' >&2; exit 3; fi"#;

/// An inbox with two good files, one bad one and a FIFO.
fn inbox() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "good1.txt", b"ok");
    write(dir.path(), "good2.txt", b"ok");
    write(dir.path(), "bad.txt", b"bad");
    let fifo = std::ffi::CString::new(dir.path().join("pipe").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    dir
}

/// `watcher DIR --once EXTRA -- sh -c SCRIPT sh`: (exit code, stderr lines).
fn once(dir: &std::path::Path, extra: &[&str]) -> (Option<i32>, Vec<String>) {
    let out = Command::new(BIN)
        .arg(dir)
        .arg("--once")
        .args(extra)
        .args(["--", "sh", "-c", SCRIPT, "sh"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    (out.status.code(), err.lines().map(str::to_owned).collect())
}

#[test]
fn json_lines_are_one_object_each_with_every_file() {
    let dir = inbox();
    let (code, lines) = once(dir.path(), &["--log-format", "json"]);
    assert_eq!(code, Some(1), "{lines:#?}");
    let objs: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let of = |event: &str| -> Vec<&Value> { objs.iter().filter(|o| o["event"] == event).collect() };
    assert_eq!(of("start").len(), 1, "{objs:#?}");
    assert_eq!(of("start")[0]["workers"], 2);
    assert_eq!(objs[0]["event"], "start", "the start line comes first");

    let files: BTreeMap<String, &Value> = of("file")
        .into_iter()
        .map(|o| (o["name"].as_str().unwrap().to_owned(), o))
        .collect();
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["bad.txt", "good1.txt", "good2.txt", "pipe"]
    );
    for name in ["good1.txt", "good2.txt"] {
        let f = files[name];
        assert_eq!(f["outcome"], "processed", "{f}");
        assert_eq!(
            (f["attempts"].as_u64(), f["max_attempts"].as_u64()),
            (Some(1), Some(4))
        );
        assert!(f["duration_ms"].as_f64().unwrap() > 0.0, "{f}");
        assert!(f["error"].is_null(), "{f}");
        assert_eq!(f["interrupted"], false);
        let moved = std::path::PathBuf::from(f["moved_to"].as_str().unwrap());
        assert_eq!(
            moved,
            dir.path()
                .canonicalize()
                .unwrap()
                .join("processed")
                .join(name)
        );
        assert!(moved.exists());
    }
    let bad = files["bad.txt"];
    assert_eq!(bad["outcome"], "failed");
    assert_eq!(bad["attempts"], 1);
    assert_eq!(
        bad["error"],
        "sh exited with exit status: 3: first\ncannot handle it"
    );
    let pipe = files["pipe"];
    assert_eq!(
        (&pipe["outcome"], &pipe["attempts"]),
        (&Value::from("failed"), &Value::from(0))
    );
    assert_eq!(pipe["error"], "refused: not a regular file (a FIFO)");

    let shutdown = of("shutdown");
    assert_eq!(shutdown.len(), 1);
    assert_eq!(shutdown[0]["budget_exhausted"], false);
    assert_eq!(shutdown[0]["killed"], Value::Array(vec![]));
    assert_eq!(shutdown[0]["stages"].as_array().unwrap().len(), 3);
    let summary = of("summary");
    assert_eq!(summary.len(), 1);
    assert_eq!(
        (&summary[0]["processed"], &summary[0]["failed"]),
        (&Value::from(2), &Value::from(2))
    );
    assert_eq!(
        objs.last().unwrap()["event"],
        "summary",
        "the summary comes last"
    );
}

/// A text line about one file: `processed NAME in 1.2 ms`, `failed NAME (attempt A/M): ERR`
/// or `failed NAME (not run): ERR`.
#[derive(Debug, PartialEq)]
enum FileLine {
    Processed {
        name: String,
    },
    Failed {
        name: String,
        attempt: u32,
        of: u32,
        error: String,
    },
    Refused {
        name: String,
        error: String,
    },
}

fn parse_file_line(l: &str) -> Option<FileLine> {
    if let Some(rest) = l.strip_prefix("processed ") {
        let (name, took) = rest.rsplit_once(" in ")?;
        let (num, unit) = took.split_once(' ')?;
        num.parse::<f64>().ok()?;
        (unit == "ms" || unit == "s").then(|| FileLine::Processed { name: name.into() })
    } else if let Some(rest) = l.strip_prefix("failed ") {
        if let Some((name, error)) = rest.split_once(" (not run): ") {
            return Some(FileLine::Refused {
                name: name.into(),
                error: error.into(),
            });
        }
        let (name, rest) = rest.split_once(" (attempt ")?;
        let (counts, error) = rest.split_once("): ")?;
        let (a, m) = counts.split_once('/')?;
        Some(FileLine::Failed {
            name: name.into(),
            attempt: a.parse().ok()?,
            of: m.parse().ok()?,
            error: error.into(),
        })
    } else {
        None
    }
}

#[test]
fn text_lines_say_each_file_then_the_summary() {
    let dir = inbox();
    let (code, lines) = once(dir.path(), &[]);
    assert_eq!(code, Some(1), "{lines:#?}");
    assert!(
        lines[0].starts_with(&format!(
            "processing the files in {} with 2 worker(s): sh -c",
            dir.path().canonicalize().unwrap().display()
        )),
        "{lines:#?}"
    );
    let mut files: Vec<FileLine> = lines.iter().filter_map(|l| parse_file_line(l)).collect();
    files.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    assert_eq!(
        files,
        vec![
            FileLine::Failed {
                name: "bad.txt".into(),
                attempt: 1,
                of: 4,
                // One line: the newline of the command's stderr is escaped.
                error: r"sh exited with exit status: 3: first\ncannot handle it".into(),
            },
            FileLine::Processed {
                name: "good1.txt".into()
            },
            FileLine::Processed {
                name: "good2.txt".into()
            },
            FileLine::Refused {
                name: "pipe".into(),
                error: "refused: not a regular file (a FIFO)".into(),
            },
        ]
    );
    let summary = lines.last().unwrap();
    let (counts, took) = summary.split_once(", in ").unwrap();
    assert_eq!(counts, "summary: processed 2, failed 2, handed back 0");
    assert!(took.ends_with(" ms") || took.ends_with(" s"), "{summary}");
}

#[test]
fn quiet_drops_the_file_lines_only() {
    for format in ["text", "json"] {
        let dir = inbox();
        let (code, lines) = once(dir.path(), &["--quiet", "--log-format", format]);
        assert_eq!(code, Some(1), "{lines:#?}");
        let file_lines = lines
            .iter()
            .filter(|l| {
                parse_file_line(l).is_some()
                    || serde_json::from_str::<Value>(l).is_ok_and(|o| o["event"] == "file")
            })
            .count();
        assert_eq!(file_lines, 0, "{format}: {lines:#?}");
        let last = lines.last().unwrap();
        match format {
            "text" => assert!(
                last.starts_with("summary: processed 2, failed 2, handed back 0, in "),
                "{last}"
            ),
            _ => {
                let o: Value = serde_json::from_str(last).unwrap();
                assert_eq!(
                    (&o["event"], &o["processed"]),
                    (&Value::from("summary"), &Value::from(2))
                );
            }
        }
        // The files were processed all the same.
        assert!(dir.path().join("processed/good1.txt").exists());
    }
}

/// `watcher DIR EXTRA -- true` in watch mode, and its stderr lines as they come.
fn watching(
    dir: &std::path::Path,
    extra: &[&str],
) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .arg(dir)
        .args(extra)
        .args(["--", "true"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

#[test]
fn watch_mode_says_each_file_as_it_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, rx) = watching(dir.path(), &[]);
    let next = || {
        rx.recv_timeout(Duration::from_secs(20))
            .expect("a line on stderr")
    };
    let first = next();
    assert!(first.starts_with("watching "), "{first}");
    // The watcher is up: a file dropped now is seen, and said, while it runs.
    write(dir.path(), "late.txt", b"x");
    let line = next();
    assert_eq!(
        parse_file_line(&line),
        Some(FileLine::Processed {
            name: "late.txt".into()
        }),
        "{line}"
    );
    // SAFETY: our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let rest: Vec<String> = rx.iter().collect();
    assert_eq!(child.wait().unwrap().code(), Some(0), "{rest:#?}");
    assert!(rest[0].starts_with("shutdown report"), "{rest:#?}");
    assert!(rest
        .last()
        .unwrap()
        .starts_with("summary: processed 1, failed 0, handed back 0, in "));
}

/// This process's child `pid` has children of its own (a command the watcher started).
#[cfg(target_os = "linux")]
fn has_children(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|t| {
            std::fs::read_to_string(t.path().join("children")).is_ok_and(|c| !c.trim().is_empty())
        })
}

#[test]
#[cfg(target_os = "linux")]
fn json_shutdown_names_a_killed_command_and_a_name_that_is_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let raw = std::ffi::OsStr::from_bytes(b"bad\xff.txt");
    std::fs::write(dir.path().join(raw), b"x").unwrap();
    let mut child = Command::new(BIN)
        .arg(dir.path())
        .args(["--log-format", "json", "--shutdown-timeout", "200ms"])
        .args(["--", "sh", "-c", "exec sleep 300", "sh"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if !wait_until(Duration::from_secs(20), || has_children(child.id())) {
        let _ = child.kill();
        panic!("the command never started");
    }
    // SAFETY: our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    let objs: Vec<Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let shutdown = objs.iter().find(|o| o["event"] == "shutdown").expect(&err);
    assert_eq!(shutdown["budget_exhausted"], true, "{shutdown}");
    let killed = shutdown["killed"].as_array().unwrap();
    assert_eq!(killed.len(), 1, "{shutdown}");
    assert_eq!(killed[0]["command"], "sh -c exec sleep 300 sh");
    assert_eq!(killed[0]["reaped"], true);
    assert!(killed[0]["pid"].as_u64().unwrap() > 1);
    let handed_back = shutdown["handed_back"].as_array().unwrap();
    assert_eq!(handed_back.len(), 1, "{shutdown}");
    assert!(
        handed_back[0].as_str().unwrap().ends_with(r"/bad\xff.txt"),
        "{shutdown}"
    );
    assert!(
        dir.path().join(raw).exists(),
        "the file stays for the next run"
    );
}

/// With `--log-format json`, what the watcher works around on its own comes as a `warning`
/// object too, not as free text: here the ledger's journal turns into a directory while the
/// watcher waits, so the next file cannot be recorded (it stays in the inbox). Every line on
/// stderr parses as JSON.
#[test]
fn json_warnings_are_json_too() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, rx) = watching(dir.path(), &["--log-format", "json"]);
    let next = || -> Value {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("a line on stderr");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };
    assert_eq!(next()["event"], "start");
    // Idle, the watcher holds no fd for its journal: the next append opens it again, and fails.
    let journal = dir.path().join(watcher::ledger::JOURNAL);
    std::fs::remove_file(&journal).unwrap();
    std::fs::create_dir(&journal).unwrap();
    write(dir.path(), "late.txt", b"x");
    let warning = next();
    assert_eq!(warning["event"], "warning", "{warning}");
    let message = warning["message"].as_str().unwrap();
    assert!(
        message.starts_with("cannot record late.txt in the ledger: ")
            && message.ends_with("; leaving it in place"),
        "{message}"
    );
    assert!(dir.path().join("late.txt").exists());
    // SAFETY: our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let rest: Vec<Value> = rx
        .iter()
        .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    child.wait().unwrap();
    let events: Vec<_> = rest.iter().map(|o| o["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["shutdown", "summary"], "{rest:#?}");
}

/// A start that fails says why as one JSON object with `--log-format json` (exit 2), and as
/// a `watcher: ` line without it.
#[test]
fn a_failed_start_is_one_json_error() {
    let dir = tempfile::tempdir().unwrap();
    // `processed` cannot be created: a file has its name.
    write(dir.path(), "processed", b"not a directory");
    for json in [true, false] {
        let mut cmd = Command::new(BIN);
        cmd.arg(dir.path()).arg("--once");
        if json {
            cmd.args(["--log-format", "json"]);
        }
        let out = cmd.args(["--", "true"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8(out.stderr).unwrap();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{err}");
        if json {
            let o: Value = serde_json::from_str(lines[0]).unwrap();
            assert_eq!(o["event"], "error");
            assert!(o["message"].as_str().unwrap().contains("processed"), "{o}");
        } else {
            assert!(lines[0].starts_with("watcher: "), "{err}");
        }
    }
}
