//! Picking the frames that say who created a thread, out of the raw backtrace of its creation.
//!
//! A creation's backtrace runs from the hook, through std's thread builder (or tokio's pool, or a
//! library's own thread), out to the code that asked for it. What a reader needs is the user's
//! own `file:line` (the innermost frame of code that is neither std, nor a dependency, nor the
//! harness), and, where a library created the thread on the user's behalf, the innermost
//! frame of that library: `notify::inotify::EventLoop::run` created notify's thread; the
//! outermost (`recommended_watcher`) only led to it. tokio's frames are skipped as internals:
//! a tokio worker or blocking thread is named by the user code that started the runtime or
//! the blocking call.
//!
//! The same frames classify a creation, for any source that records one (threads here; fds and
//! child processes where their creation is recorded):
//! - made inside a one-time initializer (std's `Once`, `OnceLock`, `LazyLock`, `once_cell`,
//!   `lazy_static`): a process global, made once per process, so it cannot grow per test or
//!   per cycle ([`Site::once_global`] names it by the initializer);
//! - made by which function ([`Site::created_by`]): the innermost frame that is not std or the
//!   C library, the function path an unnamed thread is labelled by and `ignore_created_by`
//!   matches.

use std::fmt;

/// One resolved frame (an inlined call is a frame of its own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    /// Demangled, without the hash: `notify::inotify::EventLoop::run`.
    pub(crate) name: Option<String>,
    pub(crate) file: Option<String>,
    pub(crate) line: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// std, core, alloc, the C library, the hook: how threads get made.
    Plumbing,
    /// Dependencies whose frames never explain a leak: tokio's internals, the harness itself.
    Internal,
    /// A dependency (from a registry or a git checkout).
    Library,
    /// The user's own code (paths as debug info has them: absolute, or relative to the
    /// workspace root).
    User,
}

/// Where a thread came from, in the words of a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Site {
    /// The innermost frame of the user's code: `tests/leaks.rs:42`.
    pub(crate) user: Option<Frame>,
    /// The innermost library frame inside the user's call, if a library made the thread.
    pub(crate) library: Option<Frame>,
    /// The innermost frame of a one-time initializer (`Once::call_once`, `OnceLock::initialize`,
    /// `LazyLock::force`, `once_cell::imp::OnceCell::initialize`, `lazy_static::lazy::Lazy::get`)
    /// the creation ran inside, if any.
    pub(crate) initializer: Option<Frame>,
    /// What that initializer ran: the outermost frame of code other than std inside it (the
    /// closure given to `call_once` or `get_or_init`, a `LazyLock`'s function), else the frame
    /// that called the initializer.
    pub(crate) initialized_by: Option<Frame>,
    /// The innermost frame that is neither std, the C library nor the harness: the function
    /// that created it.
    pub(crate) creator: Option<Frame>,
}

impl Site {
    /// Picks the frames to show from a creation's frames, innermost first.
    pub(crate) fn pick(frames: &[Frame]) -> Site {
        let user_at = frames.iter().position(|f| kind(f) == Kind::User);
        let inner = &frames[..user_at.unwrap_or(frames.len())];
        let init_at = frames.iter().position(is_initializer);
        let code = |f: &&Frame| kind(f) != Kind::Plumbing && !is_initializer(f) && !is_harness(f);
        let initialized_by = init_at.and_then(|i| {
            let inside = frames[..i].iter().rev().find(code);
            inside
                .or_else(|| frames[i + 1..].iter().find(code))
                .cloned()
        });
        Site {
            user: user_at.map(|i| frames[i].clone()),
            library: inner.iter().find(|f| kind(f) == Kind::Library).cloned(),
            initializer: init_at.map(|i| frames[i].clone()),
            initialized_by,
            creator: frames.iter().find(code).cloned(),
        }
    }

    /// For a creation inside a one-time initializer, what names it as a process global:
    /// `rayon_core::registry::set_global_registry` (the function whose initializer made it),
    /// else the library that made it, else the initializer itself. `None` for any other
    /// creation.
    pub(crate) fn once_global(&self) -> Option<String> {
        let init = self.initializer.as_ref()?;
        let by = [&self.initialized_by, &self.library, &self.creator]
            .into_iter()
            .flatten()
            .chain([init])
            .find_map(|f| f.name.as_deref())
            .unwrap_or("a one-time initializer");
        Some(function(by).to_owned())
    }

    /// The path of the function that created it (`threadpool::spawn_in_pool`), without
    /// closure suffixes; `None` where no frame of Rust code other than std is known.
    pub(crate) fn created_by(&self) -> Option<&str> {
        self.creator.as_ref()?.name.as_deref().map(function)
    }
}

/// The harness's own frames (the hook's capture among them), which never created anything a
/// user made.
fn is_harness(frame: &Frame) -> bool {
    let name = frame.name.as_deref().unwrap_or("");
    crate_of(name) == "leakcheck" && !name.contains("::tests::")
}

/// Whether a frame belongs to a one-time initializer: std's `Once` (`call_once`,
/// `call_once_force`, the platform `Once::call` underneath), `OnceLock`'s and `LazyLock`'s
/// initialisation, `once_cell`'s synchronised cells and `lazy_static`. Matched on the function
/// path with generic arguments and closure suffixes taken out, so that the module std keeps
/// them in (it has moved between releases) does not matter.
pub(crate) fn is_initializer(frame: &Frame) -> bool {
    let Some(name) = frame.name.as_deref() else {
        return false;
    };
    let path = without_generics(function(name));
    let path = path.as_str();
    let std_once = [
        "::Once::call_once",
        "::Once::call_once_force",
        "::Once::call",
        "::OnceLock::initialize",
        "::OnceLock::get_or_init",
        "::OnceLock::get_or_try_init",
        "::LazyLock::force",
    ];
    (path.starts_with("std::") && std_once.iter().any(|tail| path.ends_with(tail)))
        || path.starts_with("once_cell::imp::")
        || path.starts_with("once_cell::sync::")
        || path.starts_with("lazy_static::lazy::Lazy::get")
}

/// A path with every `<…>` (generic arguments, `<T as Trait>`) taken out:
/// `std::sync::once_lock::OnceLock<T>::initialize` → `std::sync::once_lock::OnceLock::initialize`.
fn without_generics(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut depth = 0usize;
    for c in path.chars() {
        match c {
            '<' => depth += 1,
            '>' if depth > 0 => depth -= 1,
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

impl fmt::Display for Site {
    /// `spawned at tests/leaks.rs:42`, `spawned at src/lib.rs:9 via
    /// notify::inotify::EventLoop::run (inotify.rs:125)`, or without a frame of the user's
    /// code: `spawned by notify::inotify::EventLoop::run (inotify.rs:125)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.user, &self.library) {
            (Some(user), lib) => {
                write!(f, "spawned at {}", Location(user))?;
                if let Some(lib) = lib {
                    write!(f, " via {}", Call(lib))?;
                }
                Ok(())
            }
            (None, Some(lib)) => write!(f, "spawned by {}", Call(lib)),
            (None, None) => write!(f, "spawn site not in the debug info"),
        }
    }
}

/// `file:line`, or the function name where the file is unknown.
struct Location<'a>(&'a Frame);

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.0.file, self.0.line, &self.0.name) {
            (Some(file), Some(line), _) => {
                write!(f, "{}:{line}", short_path(file, source_root()))
            }
            (Some(file), None, _) => write!(f, "{}", short_path(file, source_root())),
            (None, _, Some(name)) => write!(f, "{}", function(name)),
            (None, _, None) => write!(f, "<unknown>"),
        }
    }
}

/// `notify::inotify::EventLoop::run (inotify.rs:125)`.
struct Call<'a>(&'a Frame);

impl fmt::Display for Call<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let frame = self.0;
        match &frame.name {
            Some(name) => write!(f, "{}", function(name))?,
            None => write!(f, "<unknown>")?,
        }
        if let (Some(file), Some(line)) = (&frame.file, frame.line) {
            let base = file.rsplit('/').next().unwrap_or(file);
            write!(f, " ({base}:{line})")?;
        }
        Ok(())
    }
}

/// Where a thread is stuck now, from a sample of its stack: the innermost frame of the user's
/// code and the call it made there (the frame just inside it: `std::sync::mpsc::Receiver::recv`,
/// `std::thread::sleep`, a library's function).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Waiting {
    pub(crate) user: Option<Frame>,
    /// The call the user frame waits in; without a user frame, the innermost frame of a
    /// library (or of tokio) with debug info.
    pub(crate) call: Option<Frame>,
}

impl Waiting {
    /// Picks the frames to show from a sampled stack's frames, innermost first.
    pub(crate) fn pick(frames: &[Frame]) -> Waiting {
        match frames.iter().position(|f| kind(f) == Kind::User) {
            Some(at) => Waiting {
                user: Some(frames[at].clone()),
                call: at.checked_sub(1).map(|i| frames[i].clone()),
            },
            None => Waiting {
                user: None,
                call: frames
                    .iter()
                    .find(|f| matches!(kind(f), Kind::Library | Kind::Internal))
                    .cloned(),
            },
        }
    }
}

impl Waiting {
    /// The same words for a task's await point: `awaiting at src/svc.rs:88 in
    /// tokio::sync::mpsc::Receiver::recv`.
    #[cfg_attr(not(task_dumps), allow(dead_code))]
    pub(crate) fn awaiting(&self) -> impl fmt::Display + '_ {
        Worded(self, "awaiting")
    }
}

struct Worded<'a>(&'a Waiting, &'static str);

impl fmt::Display for Waiting {
    /// `waiting at src/pool.rs:52 in std::sync::mpsc::Receiver::recv`; without user code,
    /// `waiting in r2d2::…::run (lib.rs:88)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Worded(self, "waiting").fmt(f)
    }
}

impl fmt::Display for Worded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Worded(waiting, verb) = self;
        match (&waiting.user, &waiting.call) {
            (Some(user), Some(call)) => {
                let name = call.name.as_deref().unwrap_or("<unknown>");
                write!(
                    f,
                    "{verb} at {} in {}",
                    Location(user),
                    public_path(&shown_path(function(name)))
                )
            }
            (Some(user), None) => write!(f, "{verb} at {}", Location(user)),
            (None, Some(call)) => write!(f, "{verb} in {}", Call(call)),
            (None, None) => {
                let does = if *verb == "waiting" {
                    "waits"
                } else {
                    "awaits"
                };
                write!(f, "where it {does} is not in the debug info")
            }
        }
    }
}

/// std's own path for a function defined in a private module and re-exported by its parent,
/// as the user wrote it: `std::sync::poison::mutex::Mutex::lock` → `std::sync::Mutex::lock`,
/// `std::thread::functions::sleep` → `std::thread::sleep`.
fn public_path(name: &str) -> String {
    const PRIVATE: [(&str, &str); 14] = [
        ("std::sync::poison::mutex::", "std::sync::"),
        ("std::sync::poison::rwlock::", "std::sync::"),
        ("std::sync::poison::condvar::", "std::sync::"),
        ("std::sync::poison::", "std::sync::"),
        ("std::thread::functions::", "std::thread::"),
        // tokio's, for a task's await point.
        ("tokio::sync::mpsc::bounded::", "tokio::sync::mpsc::"),
        ("tokio::sync::mpsc::unbounded::", "tokio::sync::mpsc::"),
        ("tokio::sync::mutex::", "tokio::sync::"),
        ("tokio::sync::rwlock::", "tokio::sync::"),
        ("tokio::sync::notify::", "tokio::sync::"),
        ("tokio::sync::semaphore::", "tokio::sync::"),
        ("tokio::sync::barrier::", "tokio::sync::"),
        ("tokio::time::sleep::", "tokio::time::"),
        ("tokio::time::interval::", "tokio::time::"),
    ];
    PRIVATE
        .iter()
        .find_map(|(from, to)| name.strip_prefix(from).map(|rest| format!("{to}{rest}")))
        .unwrap_or_else(|| name.to_owned())
}

/// A path as a report shows it, without generic arguments: `std::sync::mpsc::Receiver<T>::recv`
/// → `std::sync::mpsc::Receiver::recv`. A qualified path (`<T as Trait>::f`) is kept whole.
fn shown_path(name: &str) -> String {
    if name.starts_with('<') {
        return name.to_owned();
    }
    without_generics(name)
}

/// A function's path without closure suffixes: `a::b::{{closure}}` (or `{closure#0}`) → `a::b`.
pub(crate) fn function(name: &str) -> &str {
    let mut name = name;
    loop {
        if let Some(stripped) = name.strip_suffix("::{{closure}}") {
            name = stripped;
        } else if let Some((head, tail)) = name.rsplit_once("::{closure#") {
            if !tail.ends_with('}') {
                return name;
            }
            name = head;
        } else {
            return name;
        }
    }
}

/// The crate a symbol belongs to: its first path segment, looking through `<T as Trait>`.
fn crate_of(name: &str) -> &str {
    let name = name.trim_start_matches(['<', '&', '_', '*']);
    let name = name.strip_prefix("mut ").unwrap_or(name);
    let name = name.strip_prefix("dyn ").unwrap_or(name);
    let end = name
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(name.len());
    &name[..end]
}

fn kind(frame: &Frame) -> Kind {
    let file = frame.file.as_deref().unwrap_or("");
    let name = frame.name.as_deref().unwrap_or("");
    let krate = crate_of(name);
    if matches!(
        krate,
        "std" | "core" | "alloc" | "test" | "pthread_create" | "backtrace"
    ) || file.starts_with("/rustc/")
        || file.contains("/library/std/src/")
        || file.contains("/library/core/src/")
        || file.contains("/library/alloc/src/")
    {
        return Kind::Plumbing;
    }
    // The harness's own tests are user code to themselves.
    if krate == "tokio" || (krate == "leakcheck" && !name.contains("::tests::")) {
        return Kind::Internal;
    }
    if !file.ends_with(".rs") {
        // No debug info, or C: libc (`start_thread` in `pthread_create.c`, `clone3`) or a
        // stripped library. Only a frame of Rust source can be pointed at.
        return Kind::Plumbing;
    }
    if is_dependency_path(file) {
        return Kind::Library;
    }
    Kind::User
}

/// Sources of dependencies: cargo's registry and git checkouts, and vendored crates.
fn is_dependency_path(file: &str) -> bool {
    file.contains("/registry/src/") || file.contains("/git/checkouts/") || file.contains("/vendor/")
}

/// The directory paths in a report are relative to: the workspace root (the nearest directory
/// above the working directory that holds a `Cargo.lock`), as `file!()` and tokio's spawn
/// sites give them; else the working directory.
pub(crate) fn source_root() -> Option<&'static str> {
    static ROOT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let cwd = std::env::current_dir().ok()?;
        let root = cwd
            .ancestors()
            .find(|dir| dir.join("Cargo.lock").is_file())
            .unwrap_or(&cwd);
        root.to_str().map(str::to_owned)
    })
    .as_deref()
}

/// A path as a reader wants it: relative to `root` where it lies below it, and from the
/// crate's directory for a dependency (`notify-8.2.0/src/inotify.rs`).
pub(crate) fn short_path(path: &str, root: Option<&str>) -> String {
    if let Some(rest) = root.and_then(|root| path.strip_prefix(root)) {
        if let Some(rest) = rest.strip_prefix('/') {
            return rest.to_owned();
        }
    }
    for marker in ["/registry/src/", "/git/checkouts/"] {
        if let Some((_, rest)) = path.split_once(marker) {
            // Skip the index (or repository) directory: `index.crates.io-…/notify-8.2.0/…`.
            if let Some((_, krate)) = rest.split_once('/') {
                return krate.to_owned();
            }
        }
    }
    path.to_owned()
}

/// A frame for tests: an empty `file` or a `line` of 0 stands for none.
#[cfg(test)]
pub(crate) fn frame(name: &str, file: &str, line: u32) -> Frame {
    Frame {
        name: Some(name.to_owned()),
        file: (!file.is_empty()).then(|| file.to_owned()),
        line: (line > 0).then_some(line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn std_spawn_frames() -> Vec<Frame> {
        vec![
            frame(
                "backtrace::backtrace::trace_unsynchronized",
                "/h/.cargo/registry/src/i/backtrace-0.3.77/src/backtrace/mod.rs",
                66,
            ),
            frame("pthread_create", "harness/src/origin/spawn_hook.rs", 120),
            frame(
                "std::sys::pal::unix::thread::Thread::new",
                "/rustc/abc/library/std/src/sys/pal/unix/thread.rs",
                84,
            ),
            frame(
                "std::thread::Builder::spawn_unchecked_",
                "/rustc/abc/library/std/src/thread/mod.rs",
                577,
            ),
            frame(
                "std::thread::spawn",
                "/rustc/abc/library/std/src/thread/mod.rs",
                690,
            ),
        ]
    }

    #[test]
    fn a_thread_spawned_by_the_user_names_the_users_line() {
        let mut frames = std_spawn_frames();
        frames.push(frame("origins::spawn_one", "tests/origins.rs", 42));
        frames.push(frame("origins::main", "tests/origins.rs", 10));
        frames.push(frame(
            "std::rt::lang_start",
            "/rustc/abc/library/std/src/rt.rs",
            1,
        ));
        let site = Site::pick(&frames);
        assert_eq!(site.to_string(), "spawned at tests/origins.rs:42");
    }

    #[test]
    fn a_thread_made_by_a_library_names_its_innermost_frame() {
        let mut frames = std_spawn_frames();
        let reg = "/root/.cargo/registry/src/index.crates.io-1949/notify-8.2.0/src";
        frames.push(frame(
            "notify::inotify::EventLoop::run",
            &format!("{reg}/inotify.rs"),
            125,
        ));
        frames.push(frame(
            "notify::inotify::INotifyWatcher::from_event_handler",
            &format!("{reg}/inotify.rs"),
            560,
        ));
        frames.push(frame(
            "<notify::inotify::INotifyWatcher as notify::Watcher>::new",
            &format!("{reg}/inotify.rs"),
            600,
        ));
        frames.push(frame(
            "notify::recommended_watcher",
            &format!("{reg}/lib.rs"),
            400,
        ));
        frames.push(frame(
            "watcher::source::Source::start::{{closure}}",
            "watcher/src/source.rs",
            77,
        ));
        let site = Site::pick(&frames);
        assert_eq!(
            site.to_string(),
            "spawned at watcher/src/source.rs:77 via notify::inotify::EventLoop::run (inotify.rs:125)"
        );
    }

    #[test]
    fn tokio_and_the_harness_are_skipped() {
        let mut frames = std_spawn_frames();
        let reg = "/root/.cargo/registry/src/index.crates.io-1949/tokio-1.54.1/src";
        frames.push(frame(
            "tokio::runtime::blocking::pool::Spawner::spawn_thread",
            &format!("{reg}/runtime/blocking/pool.rs"),
            470,
        ));
        frames.push(frame(
            "tokio::task::spawn_blocking",
            &format!("{reg}/task/blocking.rs"),
            200,
        ));
        frames.push(frame(
            "leakcheck::check::LeakCheck::run",
            "harness/src/check.rs",
            170,
        ));
        frames.push(frame("my_test::body::{{closure}}", "tests/my_test.rs", 9));
        let site = Site::pick(&frames);
        assert_eq!(site.to_string(), "spawned at tests/my_test.rs:9");
    }

    #[test]
    fn without_user_code_or_debug_info() {
        let mut frames = std_spawn_frames();
        let reg = "/root/.cargo/registry/src/index.crates.io-1949/notify-8.2.0/src";
        frames.push(frame(
            "notify::inotify::EventLoop::run",
            &format!("{reg}/inotify.rs"),
            125,
        ));
        assert_eq!(
            Site::pick(&frames).to_string(),
            "spawned by notify::inotify::EventLoop::run (inotify.rs:125)"
        );
        let stripped = vec![
            frame("start_thread", "./nptl/pthread_create.c", 442),
            frame("main", "", 0),
        ];
        assert_eq!(
            Site::pick(&stripped).to_string(),
            "spawn site not in the debug info"
        );
    }

    #[test]
    fn crates_of_symbols() {
        assert_eq!(
            crate_of("<notify::inotify::INotifyWatcher as notify::Watcher>::new"),
            "notify"
        );
        assert_eq!(crate_of("<&mut F as core::ops::FnOnce<A>>::call_once"), "F");
        assert_eq!(crate_of("_<std::thread::Thread>::new"), "std");
        assert_eq!(function("a::b::{{closure}}::{{closure}}"), "a::b");
    }

    #[test]
    fn paths_are_shortened() {
        assert_eq!(short_path("/w/ws/tests/a.rs", Some("/w/ws")), "tests/a.rs");
        assert_eq!(
            short_path("/w/wsx/tests/a.rs", Some("/w/ws")),
            "/w/wsx/tests/a.rs"
        );
        assert_eq!(
            short_path(
                "/root/.cargo/registry/src/index.crates.io-19/notify-8.2.0/src/inotify.rs",
                None
            ),
            "notify-8.2.0/src/inotify.rs"
        );
        assert_eq!(short_path("tests/a.rs", Some("/w")), "tests/a.rs");
    }
}
