//! The project file, `.config/leakcheck.toml`: one place for a project's settings, so that a
//! team can switch checks on across a suite (or survey it in warn mode) without editing every
//! test.
//!
//! ```toml
//! settle_ms = 500                  # defaults of every #[leakcheck::test]
//! ignore_thread = ["tokio-rt-*"]
//! mode = "warn"                    # or "fail" (the default)
//!
//! [[overrides]]
//! tests = "pool::tests::*"         # a glob on the test's path
//! settle_ms = 31000
//! ```
//!
//! It is found the way cargo-nextest finds `.config/nextest.toml`: in the test crate's package
//! directory, then in each directory above it up to the workspace root (the first directory
//! whose `Cargo.toml` has a `[workspace]` table); the first file found is the one used. Without
//! a workspace above, only the package's own directory is looked in, so that a stray file in
//! a home directory's `.config/` is never read. `LEAKCHECK_CONFIG` names a file to use instead.
//!
//! Precedence, per setting: an argument on the test, then the environment
//! (`LEAKCHECK_SETTLE_MS`, `LEAKCHECK_TIMEOUT_MS`, `LEAKCHECK` for the mode: the run's own
//! choice), then the first override whose glob matches, then the top level. Ignore lists add
//! up: the top level's, every matching override's and the test's own all apply.
//!
//! A key the file does not know, or a value of the wrong kind, fails every test that reads the
//! file, with a message that names the file, the line, the key and what it takes: a typo must
//! not quietly leave a setting at its default.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Where the file sits, relative to a package or workspace root.
pub(crate) const FILE: &str = ".config/leakcheck.toml";
/// Names the project file to use instead of searching for one.
pub(crate) const CONFIG_ENV: &str = "LEAKCHECK_CONFIG";
/// `warn` or `fail`: the mode of this run, over the file's.
pub(crate) const MODE_ENV: &str = "LEAKCHECK";

/// What a leak does to a test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum Mode {
    /// The test fails with the report (the default).
    #[default]
    Fail,
    /// The test passes; the report is shown, and counted in the run's summary.
    Warn,
}

/// The settings the file gives one test (before the test's own arguments).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Settings {
    pub(crate) settle_ms: Option<u64>,
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) ignore_thread: Vec<String>,
    pub(crate) ignore_fd: Vec<String>,
    pub(crate) ignore_created_by: Vec<String>,
    pub(crate) strict: Option<bool>,
    pub(crate) mode: Option<Mode>,
}

impl Settings {
    /// Fills the settings `self` leaves unset from `other`, and adds `other`'s lists after
    /// its own.
    fn fill_from(&mut self, other: &Settings) {
        self.settle_ms = self.settle_ms.or(other.settle_ms);
        self.timeout_ms = self.timeout_ms.or(other.timeout_ms);
        self.strict = self.strict.or(other.strict);
        self.mode = self.mode.or(other.mode);
        self.ignore_thread
            .extend(other.ignore_thread.iter().cloned());
        self.ignore_fd.extend(other.ignore_fd.iter().cloned());
        self.ignore_created_by
            .extend(other.ignore_created_by.iter().cloned());
    }
}

/// A parsed project file.
#[derive(Debug)]
pub(crate) struct Config {
    top: Settings,
    overrides: Vec<(Vec<glob::Pattern>, Settings)>,
}

/// The keys of the top level and of an override (which also has `tests`).
const KEYS: &[&str] = &[
    "settle_ms",
    "timeout_ms",
    "ignore_thread",
    "ignore_fd",
    "ignore_created_by",
    "strict",
    "mode",
];

impl Config {
    /// Parses the file's text; `path` is for messages.
    pub(crate) fn parse(path: &Path, text: &str) -> Result<Config, String> {
        let at = At { path, text };
        let doc = DeTable::parse(text).map_err(|e| {
            let line = e.span().map_or(String::new(), |s| at.line_col(&s));
            format!(
                "leakcheck: {}{line}: not valid TOML: {}",
                path.display(),
                e.message()
            )
        })?;
        let mut config = Config {
            top: Settings::default(),
            overrides: Vec::new(),
        };
        for (key, value) in doc.get_ref() {
            match key.get_ref().as_ref() {
                "overrides" => config.overrides = at.overrides(value)?,
                name => at.setting(&mut config.top, name, key, value, "the top level")?,
            }
        }
        Ok(config)
    }

    /// The settings for the test at `path` (`pool::tests::drops_cleanly`): the first
    /// matching override wins a setting, later ones fill the rest, the top level what is left;
    /// lists are the top level's followed by every matching override's.
    pub(crate) fn for_test(&self, path: &str) -> Settings {
        let mut settings = Settings {
            ignore_thread: self.top.ignore_thread.clone(),
            ignore_fd: self.top.ignore_fd.clone(),
            ignore_created_by: self.top.ignore_created_by.clone(),
            ..Settings::default()
        };
        for (globs, level) in &self.overrides {
            if globs.iter().any(|g| g.matches(path)) {
                settings.fill_from(level);
            }
        }
        let scalars = Settings {
            ignore_thread: Vec::new(),
            ignore_fd: Vec::new(),
            ignore_created_by: Vec::new(),
            ..self.top.clone()
        };
        settings.fill_from(&scalars);
        settings
    }
}

/// The file being read, for messages that name it and the line.
struct At<'a> {
    path: &'a Path,
    text: &'a str,
}

impl At<'_> {
    fn line_col(&self, span: &Range<usize>) -> String {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!(":{line}:{col}")
    }

    fn error(&self, span: &Range<usize>, what: impl std::fmt::Display) -> String {
        format!(
            "leakcheck: {}{}: {what}",
            self.path.display(),
            self.line_col(span)
        )
    }

    fn overrides(
        &self,
        value: &Spanned<DeValue<'_>>,
    ) -> Result<Vec<(Vec<glob::Pattern>, Settings)>, String> {
        let what = "`overrides` is a list of tables, written `[[overrides]]` with \
                    `tests = \"GLOB\"` and the settings for those tests";
        let DeValue::Array(tables) = value.get_ref() else {
            return Err(self.error(&value.span(), what));
        };
        let mut overrides = Vec::new();
        for table in tables.iter() {
            let DeValue::Table(entries) = table.get_ref() else {
                return Err(self.error(&table.span(), what));
            };
            overrides.push(self.override_table(&table.span(), entries)?);
        }
        Ok(overrides)
    }

    fn override_table(
        &self,
        span: &Range<usize>,
        entries: &DeTable<'_>,
    ) -> Result<(Vec<glob::Pattern>, Settings), String> {
        let mut globs = None;
        let mut settings = Settings::default();
        for (key, value) in entries {
            match key.get_ref().as_ref() {
                "tests" => {
                    let list = self.globs("tests", value, "tests = \"pool::tests::*\"")?;
                    globs = Some(
                        list.iter()
                            .map(|g| glob::Pattern::new(g).unwrap())
                            .collect(),
                    );
                }
                name => self.setting(&mut settings, name, key, value, "an override")?,
            }
        }
        let globs = globs.ok_or_else(|| {
            self.error(
                span,
                "an override needs `tests = \"GLOB\"`, matched against the test's path \
                 (`pool::tests::drops_cleanly`)",
            )
        })?;
        Ok((globs, settings))
    }

    /// Reads one setting into `settings`.
    fn setting(
        &self,
        settings: &mut Settings,
        name: &str,
        key: &Spanned<std::borrow::Cow<'_, str>>,
        value: &Spanned<DeValue<'_>>,
        place: &str,
    ) -> Result<(), String> {
        match name {
            "settle_ms" => settings.settle_ms = Some(self.int(name, value, 0, 3_600_000, "500")?),
            "timeout_ms" => {
                settings.timeout_ms = Some(self.int(name, value, 1, u64::MAX, "60000")?)
            }
            "ignore_thread" => {
                settings.ignore_thread = self.globs(name, value, "ignore_thread = [\"r2d2-*\"]")?
            }
            "ignore_fd" => {
                settings.ignore_fd = self.globs(name, value, "ignore_fd = [\"/var/log/*\"]")?
            }
            "ignore_created_by" => {
                settings.ignore_created_by =
                    self.globs(name, value, "ignore_created_by = [\"threadpool::*\"]")?
            }
            "strict" => settings.strict = Some(self.bool(name, value)?),
            "mode" => settings.mode = Some(self.mode(value)?),
            _ => {
                let mut allowed = KEYS.to_vec();
                allowed.push(if place == "the top level" {
                    "overrides"
                } else {
                    "tests"
                });
                return Err(self.error(
                    &key.span(),
                    format!(
                        "unknown key `{name}` in {place}; allowed: {}",
                        allowed.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    fn int(
        &self,
        name: &str,
        value: &Spanned<DeValue<'_>>,
        min: u64,
        max: u64,
        example: &str,
    ) -> Result<u64, String> {
        let range = if max == u64::MAX {
            format!("of {min} or more")
        } else {
            format!("from {min} to {max}")
        };
        let n = match value.get_ref() {
            DeValue::Integer(i) => u64::from_str_radix(i.as_str(), i.radix()).ok(),
            _ => None,
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(self.error(
                &value.span(),
                format!(
                    "`{name}` takes a whole number of milliseconds {range}, as in \
                     `{name} = {example}` (got {})",
                    self.shown(value)
                ),
            )),
        }
    }

    /// A glob, or a list of them.
    fn globs(
        &self,
        name: &str,
        value: &Spanned<DeValue<'_>>,
        example: &str,
    ) -> Result<Vec<String>, String> {
        let bad = || {
            self.error(
                &value.span(),
                format!(
                    "`{name}` takes a glob or a list of globs, as in `{example}` (got {})",
                    self.shown(value)
                ),
            )
        };
        let items: Vec<&Spanned<DeValue<'_>>> = match value.get_ref() {
            DeValue::String(_) => vec![value],
            DeValue::Array(a) => a.iter().collect(),
            _ => return Err(bad()),
        };
        let mut globs = Vec::new();
        for item in items {
            let DeValue::String(s) = item.get_ref() else {
                return Err(bad());
            };
            if let Err(e) = glob::Pattern::new(s) {
                return Err(self.error(
                    &item.span(),
                    format!(
                        "`{name}`: {s:?} is not a valid glob ({e}); `*` matches any run of \
                         characters, and a literal `[` is written `[[]`"
                    ),
                ));
            }
            globs.push(s.to_string());
        }
        Ok(globs)
    }

    fn bool(&self, name: &str, value: &Spanned<DeValue<'_>>) -> Result<bool, String> {
        match value.get_ref() {
            DeValue::Boolean(b) => Ok(*b),
            _ => Err(self.error(
                &value.span(),
                format!("`{name}` is true or false (got {})", self.shown(value)),
            )),
        }
    }

    fn mode(&self, value: &Spanned<DeValue<'_>>) -> Result<Mode, String> {
        match value.get_ref() {
            DeValue::String(s) => parse_mode(s),
            _ => None,
        }
        .ok_or_else(|| {
            self.error(
                &value.span(),
                format!("`mode` is \"fail\" or \"warn\" (got {})", self.shown(value)),
            )
        })
    }

    /// The value as written in the file.
    fn shown(&self, value: &Spanned<DeValue<'_>>) -> String {
        let span = value.span();
        self.text
            .get(span)
            .map_or_else(|| "?".to_owned(), |s| s.trim().to_owned())
    }
}

fn parse_mode(s: &str) -> Option<Mode> {
    match s {
        "fail" => Some(Mode::Fail),
        "warn" => Some(Mode::Warn),
        _ => None,
    }
}

/// The mode `LEAKCHECK` asks for, if set.
pub(crate) fn mode_from_env() -> Result<Option<Mode>, String> {
    match std::env::var(MODE_ENV) {
        Err(_) => Ok(None),
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) => parse_mode(v.trim())
            .map(Some)
            .ok_or_else(|| format!("leakcheck: {MODE_ENV} is \"warn\" or \"fail\", not {v:?}")),
    }
}

/// The project file for a test crate whose package is at `manifest_dir`, if there is one.
pub(crate) fn find(manifest_dir: &Path) -> Option<PathBuf> {
    let root = manifest_dir.ancestors().find(|d| is_workspace_root(d));
    let dirs: Vec<&Path> = match root {
        Some(root) => manifest_dir
            .ancestors()
            .take_while(|d| *d != root)
            .chain([root])
            .collect(),
        None => vec![manifest_dir],
    };
    dirs.into_iter()
        .map(|d| d.join(FILE))
        .find(|file| file.is_file())
}

fn is_workspace_root(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
        return false;
    };
    DeTable::parse(&text).is_ok_and(|doc| {
        doc.get_ref()
            .iter()
            .any(|(k, _)| k.get_ref().as_ref() == "workspace")
    })
}

type Loaded = Result<Option<Arc<Config>>, String>;

/// Reads (once per package directory) and parses the project file.
fn load(manifest_dir: &str) -> Loaded {
    static CACHE: Mutex<Vec<(String, Loaded)>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, loaded)) = cache.iter().find(|(dir, _)| dir == manifest_dir) {
        return loaded.clone();
    }
    let loaded = read(manifest_dir);
    cache.push((manifest_dir.to_owned(), loaded.clone()));
    loaded
}

fn read(manifest_dir: &str) -> Loaded {
    let path = match std::env::var_os(CONFIG_ENV) {
        Some(path) => PathBuf::from(path),
        None => match find(Path::new(manifest_dir)) {
            Some(path) => path,
            None => return Ok(None),
        },
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "leakcheck: cannot read the project file {}: {e}",
            path.display()
        )
    })?;
    Config::parse(&path, &text).map(|c| Some(Arc::new(c)))
}

/// What the project file and `LEAKCHECK` say for the test at `path`, in the crate whose
/// package is at `manifest_dir` (the runtime's `CARGO_MANIFEST_DIR` if set, as cargo and
/// cargo-nextest set it, else the one the test was compiled in).
pub(crate) fn for_test(manifest_dir: &str, path: &str) -> Result<Settings, String> {
    let runtime_dir = std::env::var("CARGO_MANIFEST_DIR").ok();
    let dir = runtime_dir.as_deref().unwrap_or(manifest_dir);
    let mut settings = match load(dir)? {
        Some(config) => config.for_test(path),
        None => Settings::default(),
    };
    if let Some(mode) = mode_from_env()? {
        settings.mode = Some(mode);
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("/p/.config/leakcheck.toml"), text)
    }

    const FILE_TEXT: &str = r#"
settle_ms = 500
ignore_thread = "tokio-*"
strict = true
mode = "warn"

[[overrides]]
tests = "pool::*"
settle_ms = 31000
ignore_thread = ["r2d2-*"]
ignore_created_by = "threadpool::*"
strict = false

[[overrides]]
tests = ["pool::slow", "other::*"]
settle_ms = 1
timeout_ms = 90000
mode = "fail"
"#;

    #[test]
    fn the_top_level_is_every_test_default() {
        let s = parse(FILE_TEXT).unwrap().for_test("unrelated::t");
        assert_eq!(
            s,
            Settings {
                settle_ms: Some(500),
                timeout_ms: None,
                ignore_thread: vec!["tokio-*".into()],
                ignore_fd: vec![],
                ignore_created_by: vec![],
                strict: Some(true),
                mode: Some(Mode::Warn),
            }
        );
    }

    #[test]
    fn the_first_matching_override_wins_and_lists_add_up() {
        let config = parse(FILE_TEXT).unwrap();
        let s = config.for_test("pool::slow");
        assert_eq!(s.settle_ms, Some(31000), "first matching override");
        assert_eq!(
            s.timeout_ms,
            Some(90000),
            "second fills what the first left"
        );
        assert_eq!(s.mode, Some(Mode::Fail));
        assert_eq!(s.ignore_thread, vec!["tokio-*", "r2d2-*"]);
        assert_eq!(s.ignore_created_by, vec!["threadpool::*"]);
        assert_eq!(
            s.strict,
            Some(false),
            "the override's false beats the top level's true"
        );
        let s = config.for_test("other::t");
        assert_eq!((s.settle_ms, s.mode), (Some(1), Some(Mode::Fail)));
        assert_eq!(s.ignore_thread, vec!["tokio-*"]);
    }

    #[test]
    fn an_unknown_key_names_the_file_line_key_and_what_is_allowed() {
        let e = parse("settle_ms = 5\nsettle = 3\n").unwrap_err();
        assert_eq!(
            e,
            "leakcheck: /p/.config/leakcheck.toml:2:1: unknown key `settle` in the top level; \
             allowed: settle_ms, timeout_ms, ignore_thread, ignore_fd, ignore_created_by, \
             strict, mode, overrides"
        );
        let e = parse("[[overrides]]\ntests = \"a\"\ncycles = 3\n").unwrap_err();
        assert!(
            e.ends_with(
                ":3:1: unknown key `cycles` in an override; allowed: settle_ms, \
                         timeout_ms, ignore_thread, ignore_fd, ignore_created_by, strict, \
                         mode, tests"
            ),
            "{e}"
        );
    }

    #[test]
    fn a_bad_value_names_the_key_and_what_it_takes() {
        let e = parse("settle_ms = \"500\"\n").unwrap_err();
        assert_eq!(
            e,
            "leakcheck: /p/.config/leakcheck.toml:1:13: `settle_ms` takes a whole number of \
             milliseconds from 0 to 3600000, as in `settle_ms = 500` (got \"500\")"
        );
        let e = parse("mode = \"loud\"").unwrap_err();
        assert!(
            e.ends_with(":1:8: `mode` is \"fail\" or \"warn\" (got \"loud\")"),
            "{e}"
        );
        let e = parse("strict = \"yes\"").unwrap_err();
        assert!(
            e.ends_with(":1:10: `strict` is true or false (got \"yes\")"),
            "{e}"
        );
        let e = parse("timeout_ms = 0").unwrap_err();
        assert!(e.contains("of 1 or more"), "{e}");
        let e = parse("ignore_fd = [\"socket:[\"]").unwrap_err();
        assert!(e.contains("is not a valid glob"), "{e}");
        let e = parse("[[overrides]]\nsettle_ms = 3\n").unwrap_err();
        assert!(e.contains("an override needs `tests = \"GLOB\"`"), "{e}");
        let e = parse("settle_ms = [").unwrap_err();
        assert!(e.contains("not valid TOML"), "{e}");
    }

    #[test]
    fn the_file_is_found_up_to_the_workspace_root_and_no_further() {
        let base = std::env::temp_dir().join(format!("leakcheck-config-{}", std::process::id()));
        let ws = base.join("ws");
        let pkg = ws.join("crates/pkg");
        std::fs::create_dir_all(pkg.join("src")).unwrap();
        std::fs::write(ws.join("Cargo.toml"), "[workspace]\nmembers = []\n").unwrap();
        std::fs::write(pkg.join("Cargo.toml"), "[package]\nname = \"pkg\"\n").unwrap();
        // Above the workspace root: never read.
        std::fs::create_dir_all(base.join(".config")).unwrap();
        std::fs::write(base.join(FILE), "mode = \"warn\"\n").unwrap();
        assert_eq!(find(&pkg), None);
        std::fs::create_dir_all(ws.join(".config")).unwrap();
        std::fs::write(ws.join(FILE), "").unwrap();
        assert_eq!(find(&pkg), Some(ws.join(FILE)));
        // The package's own file comes first.
        std::fs::create_dir_all(pkg.join(".config")).unwrap();
        std::fs::write(pkg.join(FILE), "").unwrap();
        assert_eq!(find(&pkg), Some(pkg.join(FILE)));
        // A package with no workspace above looks in its own directory only.
        let alone = base.join("alone");
        std::fs::create_dir_all(&alone).unwrap();
        std::fs::write(alone.join("Cargo.toml"), "[package]\nname = \"alone\"\n").unwrap();
        assert_eq!(find(&alone), None);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
