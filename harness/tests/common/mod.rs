//! Planted leaks and lingering resources for the harness's tests.
//!
//! Every leak here is real while a check runs and is cleaned up afterwards (`Drop`), so one
//! test's planted leak never becomes another test's baseline noise.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A named thread that parks forever and is never joined: a leak that outlives the test, for
/// checks that run in a process of their own (the process ends with it).
pub fn park_forever(name: &str) {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(|| loop {
            std::thread::park();
        })
        .unwrap();
}

/// Threads and fds leaked on purpose, released when this is dropped.
#[derive(Default)]
pub struct Planted {
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    tickers: Mutex<Vec<mpsc::Sender<()>>>,
    fds: Mutex<Vec<RawFd>>,
}

impl Planted {
    pub fn new() -> Self {
        Self::default()
    }

    /// A thread parked until the test ends: the classic forgotten worker.
    pub fn parked_thread(&self, name: &str) {
        let stop = self.stop.clone();
        let handle = thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    thread::park();
                }
            })
            .unwrap();
        self.threads.lock().unwrap().push(handle);
    }

    /// A detached thread looping on a 24 h ticker (it ends when the test drops its sender).
    pub fn ticker_thread(&self, name: &str) {
        let (tx, rx) = mpsc::channel::<()>();
        thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    rx.recv_timeout(Duration::from_secs(24 * 3600))
                {}
            })
            .unwrap();
        self.tickers.lock().unwrap().push(tx);
    }

    /// An fd leaked with `mem::forget(File)`; its number is kept only to close it at the end.
    pub fn forgotten_fd(&self, path: &str) {
        let file = File::open(path).unwrap();
        self.fds.lock().unwrap().push(file.as_raw_fd());
        std::mem::forget(file);
    }

    pub fn thread_count(&self) -> usize {
        self.threads.lock().unwrap().len() + self.tickers.lock().unwrap().len()
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for handle in self.threads.lock().unwrap().drain(..) {
            handle.thread().unpark();
            handle.join().unwrap();
        }
        self.tickers.lock().unwrap().clear();
        for fd in self.fds.lock().unwrap().drain(..) {
            // SAFETY: the fd was leaked by `forgotten_fd` and is closed exactly once here.
            unsafe { libc::close(fd) };
        }
    }
}

/// A detached thread that outlives the call that started it by `linger`: the way notify's
/// thread outlives its watcher's drop. Its timed wait *is* the scenario (a resource that goes
/// away late), not synchronisation.
pub fn thread_exiting_after(name: &str, linger: Duration) {
    thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let until = Instant::now() + linger;
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                thread::park_timeout(left);
            }
        })
        .unwrap();
}

/// A process-wide pool of threads made on first use and kept for the life of the process, the
/// way a lazily initialised global runtime or signal handler is.
pub struct LazyPool {
    started: Mutex<usize>,
    max: usize,
    name: &'static str,
}

impl LazyPool {
    pub const fn new(name: &'static str, max: usize) -> Self {
        LazyPool {
            started: Mutex::new(0),
            max,
            name,
        }
    }

    /// Starts one more pool thread per call until the pool is full.
    pub fn grow_one(&self) {
        let mut started = self.started.lock().unwrap();
        if *started < self.max {
            *started += 1;
            thread::Builder::new()
                .name(self.name.into())
                .spawn(|| loop {
                    thread::park();
                })
                .unwrap();
        }
    }

    /// Fills the pool on first use.
    pub fn fill(&self) {
        for _ in 0..self.max {
            self.grow_one();
        }
    }
}
