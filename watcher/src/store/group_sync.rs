//! Syncs to disk off the runtime thread, and group commit: one `fsync` makes durable the changes
//! of every worker that made its change before that `fsync` started.
//!
//! Why: an `fsync` waits for the disk (0.1 ms on an idle virtio disk, several ms while other
//! processes write), and the watcher's tasks share few runtime threads (the CLI's runtime has
//! two). Run inline, each sync stalls every worker, and a file's commit order needs several
//! (see [`crate::store::status`]): with 4 workers the syncs went one at a time and bounded throughput
//! (`BENCHMARKS.md`). Here a sync runs on the runtime's blocking pool while the task awaits it,
//! so the other workers go on (spawning their commands, writing their records), and their syncs
//! of the same file share one: a worker makes its change (appends a ledger record), then awaits
//! [`GroupSync::sync`]; if a sync that started after its change completes meanwhile, it is done
//! without a sync of its own. The ledger's journal is synced this way; the syncs of status files
//! and directories are shared differently, by checkpoints (`checkpoint.rs`).
//!
//! Only the sync goes off the thread: the change it makes durable (a ledger record) stays in the
//! task's poll, so an aborted worker leaves at most an `fsync` finishing on a pool thread,
//! which changes nothing.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// Runs `f`, a blocking sync, on the runtime's blocking pool and awaits it.
pub(crate) async fn off_thread<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(io::Error::other(format!("sync task failed: {e}"))),
    }
}

/// The sync in progress, ended when dropped: after the sync returns, and also when it panics or
/// when its blocking task is dropped unrun (a runtime shutting down), so that `running` is never
/// left set and no later caller waits forever.
struct Running {
    inner: Arc<Inner>,
    /// The last ticket this sync makes durable.
    covers: u64,
    ok: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        st.running = false;
        if self.ok {
            st.durable = st.durable.max(self.covers);
        }
        drop(st);
        self.inner.ended.notify_waiters();
    }
}

/// Group commit of one sync target (a file or a directory). See the [module docs](self).
#[derive(Default)]
pub(crate) struct GroupSync {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    /// Notified when a sync ends.
    ended: Notify,
}

#[derive(Default)]
struct State {
    /// Tickets handed out; a caller takes its ticket after its change.
    taken: u64,
    /// Every ticket up to this one is durable.
    durable: u64,
    /// A sync is running.
    running: bool,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        crate::mutex::lock(&self.state)
    }
}

impl GroupSync {
    /// Returns once a run of `sync_now` that started after this call began has succeeded (this
    /// caller's or another's). The error of a sync this caller ran is returned; after another
    /// caller's sync failed, this one runs its own. `sync_now` runs off the runtime thread.
    pub async fn sync<F>(&self, sync_now: F) -> io::Result<()>
    where
        F: FnOnce() -> io::Result<()> + Send + 'static,
    {
        let ticket = {
            let mut st = self.inner.lock();
            st.taken += 1;
            st.taken
        };
        loop {
            let ended = self.inner.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let covers = {
                let mut st = self.inner.lock();
                if st.durable >= ticket {
                    return Ok(());
                }
                if st.running {
                    None
                } else {
                    st.running = true;
                    Some(st.taken)
                }
            };
            let Some(covers) = covers else {
                ended.await;
                continue;
            };
            // The outcome is recorded by the blocking task itself, so that a caller dropped
            // while it waits (an aborted worker) cannot leave `running` set.
            let running = Running {
                inner: self.inner.clone(),
                covers,
                ok: false,
            };
            return off_thread(move || {
                // Take the whole guard into the task (a closure would capture only the field).
                let mut running = running;
                let result = sync_now();
                running.ok = result.is_ok();
                result
            })
            .await;
        }
    }

    /// The last ticket made durable (for tests).
    #[cfg(test)]
    fn durable(&self) -> u64 {
        self.inner.lock().durable
    }

    /// Tickets taken so far (for tests).
    #[cfg(test)]
    fn taken(&self) -> u64 {
        self.inner.lock().taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    #[tokio::test]
    async fn a_lone_caller_syncs_once() {
        let g = GroupSync::default();
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        g.sync(move || {
            n2.fetch_add(1, SeqCst);
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(n.load(SeqCst), 1);
        assert_eq!(g.durable(), 1);
    }

    #[tokio::test]
    async fn an_error_reaches_the_caller_that_ran_it_and_the_next_one_syncs_again() {
        let g = GroupSync::default();
        let err = g
            .sync(|| Err(io::Error::other("disk on fire")))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "disk on fire");
        assert_eq!(g.durable(), 0, "a failed sync makes nothing durable");
        g.sync(|| Ok(())).await.unwrap();
        assert_eq!(g.durable(), 2);
    }

    /// A sync that panics reaches its caller as an error and leaves the next caller free to
    /// sync: before `Running` ended a sync on drop, that next caller waited forever.
    #[tokio::test]
    async fn a_panicking_sync_does_not_wedge_the_next_caller() {
        let g = GroupSync::default();
        let err = g.sync(|| panic!("sync panicked")).await.unwrap_err();
        assert!(err.to_string().contains("sync task failed"), "{err}");
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), g.sync(|| Ok(())));
        next.await.expect("the next sync ran").unwrap();
        assert_eq!(g.durable(), 2);
    }

    /// Many workers on a 2-thread runtime, each making a change (a counter) and syncing: every
    /// one returns only after a sync that saw its change. The negative control: `sync_now`
    /// that records what it saw minus one change (a sync that started too early) is caught by
    /// the same check.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_caller_is_covered_by_a_sync_that_saw_its_change() {
        let (runs, total) = covered_callers(false).await;
        assert!(runs <= total, "{runs} syncs for {total} callers");
        let caught = tokio::spawn(covered_callers(true)).await;
        assert!(caught.is_err(), "a sync that saw too little went unnoticed");
    }

    /// Three callers arriving while a sync runs share the next one: two syncs for four callers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_that_arrive_during_a_sync_share_the_next_one() {
        use std::sync::mpsc::{channel, Receiver, Sender};
        let g = Arc::new(GroupSync::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (started_tx, started_rx) = channel::<()>();
        let (release_tx, release_rx) = channel::<()>();
        let sync_of = |hold: Option<(Sender<()>, Receiver<()>)>| {
            let runs = runs.clone();
            move || {
                runs.fetch_add(1, SeqCst);
                if let Some((started, release)) = hold {
                    started.send(()).unwrap();
                    release.recv().unwrap();
                }
                Ok(())
            }
        };
        let first = {
            let (g, f) = (g.clone(), sync_of(Some((started_tx, release_rx))));
            tokio::spawn(async move { g.sync(f).await })
        };
        tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
            .await
            .unwrap();
        let later: Vec<_> = (0..3)
            .map(|_| {
                let (g, f) = (g.clone(), sync_of(None));
                tokio::spawn(async move { g.sync(f).await })
            })
            .collect();
        // The three take their tickets while the first sync is held running.
        while g.taken() < 4 {
            tokio::task::yield_now().await;
        }
        release_tx.send(()).unwrap();
        first.await.unwrap().unwrap();
        for l in later {
            l.await.unwrap().unwrap();
        }
        assert_eq!(
            runs.load(SeqCst),
            2,
            "the three waiting callers share one sync"
        );
        assert_eq!(g.durable(), 4);
    }

    /// Returns (syncs run, callers); panics when a caller returned uncovered. `early`: each
    /// sync claims durability for what it saw minus one change (a broken sync).
    async fn covered_callers(early: bool) -> (usize, usize) {
        const WORKERS: usize = 8;
        const ROUNDS: usize = 100;
        let g = Arc::new(GroupSync::default());
        let changes = Arc::new(AtomicUsize::new(0));
        let durable = Arc::new(AtomicUsize::new(0));
        let runs = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                let (g, changes, durable, runs) =
                    (g.clone(), changes.clone(), durable.clone(), runs.clone());
                tokio::spawn(async move {
                    for _ in 0..ROUNDS {
                        let mine = changes.fetch_add(1, SeqCst) + 1;
                        let (changes, durable2, runs) =
                            (changes.clone(), durable.clone(), runs.clone());
                        g.sync(move || {
                            runs.fetch_add(1, SeqCst);
                            let seen = changes.load(SeqCst) - usize::from(early);
                            std::thread::yield_now(); // a sync takes a while
                            durable2.fetch_max(seen, SeqCst);
                            Ok(())
                        })
                        .await
                        .unwrap();
                        assert!(durable.load(SeqCst) >= mine, "returned uncovered");
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for w in workers {
            if let Err(e) = w.await {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        (runs.load(SeqCst), WORKERS * ROUNDS)
    }
}
