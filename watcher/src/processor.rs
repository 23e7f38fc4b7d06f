//! The [`Processor`] trait the user implements, and [`from_fn`] for closures.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::Poll;

/// Whether a failed attempt may be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Retried with backoff, up to the configured retry count.
    Retryable,
    /// Not retried: the file goes to `failed/` at once.
    Permanent,
}

/// The error a [`Processor`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessError {
    /// Retryable or permanent.
    pub kind: ErrorKind,
    /// What went wrong; recorded (bounded in size) in the file's status.
    pub message: String,
}

impl ProcessError {
    /// A transient error: the file is retried with backoff.
    pub fn retryable(message: impl Into<String>) -> Self {
        ProcessError {
            kind: ErrorKind::Retryable,
            message: message.into(),
        }
    }
    /// A permanent error: the file fails at once.
    pub fn permanent(message: impl Into<String>) -> Self {
        ProcessError {
            kind: ErrorKind::Permanent,
            message: message.into(),
        }
    }
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ErrorKind::Retryable => "retryable",
            ErrorKind::Permanent => "permanent",
        };
        write!(f, "{kind} error: {}", self.message)
    }
}

impl std::error::Error for ProcessError {}

/// Handles one file: gets its path (in the watched directory) and its contents.
///
/// `Ok(())` moves the file to `processed/`; a [`ProcessError`] is retried (if retryable) or
/// moves it to `failed/`. A panic fails the file, with the panic message in its status.
///
/// ```
/// use std::path::Path;
/// use watcher::{ProcessError, Processor};
///
/// struct NonEmpty;
///
/// impl Processor for NonEmpty {
///     async fn process(&self, _path: &Path, contents: Vec<u8>) -> Result<(), ProcessError> {
///         if contents.is_empty() {
///             return Err(ProcessError::permanent("empty file"));
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait Processor: Send + Sync + 'static {
    /// Processes one file.
    fn process(
        &self,
        path: &Path,
        contents: Vec<u8>,
    ) -> impl Future<Output = Result<(), ProcessError>> + Send;

    /// Whether [`process`](Processor::process) uses `contents` (default: yes). A processor that
    /// hands the path to something that opens the file itself (the CLI's command) says no: the
    /// watcher then checks the file as it would before reading it (a regular file, not a
    /// symlink out of the inbox, at most `max_file_size`), from its metadata without opening
    /// it, and passes empty `contents`; that saves a read and a hop to the blocking pool per
    /// file.
    fn reads_contents(&self) -> bool {
        true
    }
}

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Object-safe form of [`Processor`], used internally.
pub(crate) trait DynProcessor: Send + Sync + 'static {
    fn process_dyn<'a>(
        &'a self,
        path: &'a Path,
        contents: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), ProcessError>>;

    fn reads_contents_dyn(&self) -> bool;
}

impl<P: Processor> DynProcessor for P {
    fn process_dyn<'a>(
        &'a self,
        path: &'a Path,
        contents: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), ProcessError>> {
        Box::pin(self.process(path, contents))
    }

    fn reads_contents_dyn(&self) -> bool {
        self.reads_contents()
    }
}

/// A [`Processor`] made from a closure; see [`from_fn`].
pub struct FnProcessor<F>(F);

/// Makes a [`Processor`] from a closure taking the path and the contents.
///
/// ```
/// use watcher::{processor, ProcessError};
/// let p = processor::from_fn(|path, bytes: Vec<u8>| async move {
///     if bytes.starts_with(b"bad") {
///         Err(ProcessError::permanent(format!("{} is bad", path.display())))
///     } else {
///         Ok(())
///     }
/// });
/// # let _ = p;
/// ```
pub fn from_fn<F, Fut>(f: F) -> FnProcessor<F>
where
    F: Fn(PathBuf, Vec<u8>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), ProcessError>> + Send + 'static,
{
    FnProcessor(f)
}

impl<F, Fut> Processor for FnProcessor<F>
where
    F: Fn(PathBuf, Vec<u8>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), ProcessError>> + Send + 'static,
{
    fn process(
        &self,
        path: &Path,
        contents: Vec<u8>,
    ) -> impl Future<Output = Result<(), ProcessError>> + Send {
        (self.0)(path.to_path_buf(), contents)
    }
}

/// Polls `fut`, turning a panic into `Err(message)`.
pub(crate) async fn catch_unwind<T>(mut fut: BoxFuture<'_, T>) -> Result<T, String> {
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(panic_message(payload.as_ref()))),
        }
    })
    .await
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
