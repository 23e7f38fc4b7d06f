//! What the CLI prints on stderr: a line as it starts, one line per file as it finishes (unless
//! `--quiet`), and at the end the shutdown report and a summary. `--log-format json` prints
//! each of them as one JSON object on a line of its own (`"event"`: `start`, `file`,
//! `warning`, `error`, `shutdown`, `summary`), for a log shipper. The watcher's own warnings
//! (see `Builder::on_warning`) and a failed start come through here too, so that a JSON log
//! has nothing but JSON on it.

use std::path::Path;
use std::time::Duration;

use clap::ValueEnum;
use serde_json::json;
use watcher::{Config, FileOutcome, Metrics, Mode, Outcome, ShutdownReport};

/// The format of the lines on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object per line.
    Json,
}

/// Writes the CLI's lines, above the progress bar when there is one.
pub struct Log {
    pub format: LogFormat,
    pub quiet: bool,
    pub bar: Option<indicatif::ProgressBar>,
}

impl Log {
    fn line(&self, s: &str) {
        match &self.bar {
            Some(bar) => bar.println(s),
            None => eprintln!("{s}"),
        }
    }

    /// The first line: what runs on which directory, where its metrics are served (if they
    /// are), and how to stop it.
    pub fn start(&self, cfg: &Config, command: &str, metrics: Option<std::net::SocketAddr>) {
        let url = metrics.map(|a| format!("http://{a}/metrics"));
        let serving = url
            .as_deref()
            .map(|u| format!("; metrics at {u}"))
            .unwrap_or_default();
        let mode = match cfg.mode() {
            Mode::Watch => "watch".to_string(),
            Mode::Once => "once".to_string(),
            Mode::Poll(p) => format!("poll every {}", humantime::format_duration(p)),
        };
        match self.format {
            LogFormat::Json => {
                let mut start = json!({
                    "event": "start",
                    "dir": text(cfg.dir()),
                    "mode": mode,
                    "workers": cfg.workers(),
                    "command": command,
                });
                if let Some(url) = url {
                    start["metrics"] = url.into();
                }
                self.line(&start.to_string())
            }
            LogFormat::Text if cfg.mode() == Mode::Once => self.line(&format!(
                "processing the files in {} with {} worker(s): {command}{serving}",
                cfg.dir().display(),
                cfg.workers()
            )),
            LogFormat::Text => self.line(&format!(
                "watching {} ({mode}, {} worker(s)): {command}{serving}; Ctrl-C or SIGTERM stops",
                cfg.dir().display(),
                cfg.workers()
            )),
        }
    }

    /// One file, as it finishes: `processed NAME in 3.2 ms`, `failed NAME (attempt 1/4):
    /// ERROR`, `failed NAME (not run): refused: …`.
    pub fn file(&self, f: &FileOutcome) {
        if self.quiet {
            return;
        }
        match self.format {
            LogFormat::Json => self.line(
                &json!({
                    "event": "file",
                    "name": f.name,
                    "outcome": f.outcome,
                    "attempts": f.attempts,
                    "max_attempts": f.max_attempts,
                    "duration_ms": ms(f.duration),
                    "error": f.error,
                    "moved_to": text(&f.moved_to),
                    "interrupted": f.interrupted,
                })
                .to_string(),
            ),
            LogFormat::Text => {
                let name = one_line(&f.name);
                let again = if f.interrupted {
                    " (run again after an interruption)"
                } else {
                    ""
                };
                match f.outcome {
                    Outcome::Processed => {
                        self.line(&format!("processed {name} in {}{again}", human(f.duration)))
                    }
                    Outcome::Failed => {
                        // Refused before the command ran (a FIFO, a file too large): no attempt.
                        let tries = match f.attempts {
                            0 => "not run".to_string(),
                            n => format!("attempt {n}/{}", f.max_attempts),
                        };
                        self.line(&format!(
                            "failed {name} ({tries}){again}: {}",
                            one_line(f.error.as_deref().unwrap_or("no reason given"))
                        ))
                    }
                }
            }
        }
    }

    /// A problem the watcher worked around (`watcher: MESSAGE`), even with `--quiet`.
    pub fn warning(&self, message: &str) {
        self.problem("warning", message);
    }

    /// Why the watcher could not start (`watcher: MESSAGE`).
    pub fn error(&self, message: &str) {
        self.problem("error", message);
    }

    fn problem(&self, event: &str, message: &str) {
        match self.format {
            LogFormat::Text => self.line(&format!("watcher: {}", one_line(message))),
            LogFormat::Json => self.line(&json!({"event": event, "message": message}).to_string()),
        }
    }

    /// The end: the shutdown report, then the summary.
    pub fn end(&self, report: &ShutdownReport, m: &Metrics, elapsed: Duration) {
        match self.format {
            LogFormat::Text => {
                eprint!("{report}");
                eprintln!(
                    "summary: processed {}, failed {}, handed back {}, in {}",
                    m.processed,
                    m.failed,
                    report.handed_back.len(),
                    human(elapsed)
                );
            }
            LogFormat::Json => {
                let stages: Vec<_> = report
                    .stages
                    .iter()
                    .map(|(s, d)| json!({"stage": format!("{s:?}"), "duration_ms": ms(*d)}))
                    .collect();
                let killed: Vec<_> = report
                    .killed
                    .iter()
                    .map(|k| {
                        json!({
                            "command": k.command,
                            "pid": k.pid,
                            "file": text(&k.file),
                            "reaped": k.reaped,
                        })
                    })
                    .collect();
                let aborted: Vec<_> = report.aborted.iter().map(|t| t.name.clone()).collect();
                eprintln!(
                    "{}",
                    json!({
                        "event": "shutdown",
                        "duration_ms": ms(report.total),
                        "stages": stages,
                        "budget_exhausted": report.budget_exhausted,
                        "aborted": aborted,
                        "killed": killed,
                        "handed_back": report.handed_back.iter().map(|p| text(p)).collect::<Vec<_>>(),
                    })
                );
                eprintln!(
                    "{}",
                    json!({
                        "event": "summary",
                        "processed": m.processed,
                        "failed": m.failed,
                        "retried": m.retried,
                        "handed_back": report.handed_back.len(),
                        "duration_ms": ms(elapsed),
                    })
                );
            }
        }
    }
}

/// A path as a JSON string: serde refuses a path that is not UTF-8, so it is escaped as file
/// names are everywhere else (`watcher::escape_name`: a backslash doubled, a byte that is not
/// UTF-8 as `\xHH`), one-to-one.
fn text(p: &Path) -> String {
    watcher::escape_name(p.as_os_str())
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// `3.2 ms`, `1.25 s`.
fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// `s` on one line: control characters (a newline in a name, in a command's stderr) escaped.
fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_escapes_control_characters_only() {
        assert_eq!(one_line("new\nline\t é"), "new\\nline\\t é");
        assert_eq!(one_line(r"bad\xff.txt"), r"bad\xff.txt");
    }
}
