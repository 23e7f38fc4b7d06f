//! The two background routines: "cleanup" (prunes old ledger entries) and "file-state"
//! (prunes debounce state). Each is one tokio task in the Background stage.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use watcher_shutdown::Stage;

use crate::engine::{lock, Shared};

pub(crate) fn start(shared: &Arc<Shared>) {
    let cfg = &shared.cfg;
    let (cleanup_every, state_every) = (cfg.cleanup_every, cfg.file_state_cleanup_every);
    if cfg.leaky_background {
        // TEST FIXTURE (see `Builder::leaky_background_routines_for_tests`): the classic bug.
        // Untracked, no permit, no token: these loop until the runtime itself goes away.
        let s = shared.clone();
        shared.tasks.rt.spawn(async move {
            let mut iv = tokio::time::interval(cleanup_every);
            loop {
                iv.tick().await;
                cleanup_once(&s);
            }
        });
        let s = shared.clone();
        shared.tasks.rt.spawn(async move {
            let mut iv = tokio::time::interval(state_every);
            loop {
                iv.tick().await;
                file_state_once(&s);
            }
        });
        return;
    }
    let s = shared.clone();
    shared
        .tasks
        .spawn(Stage::Background, "cleanup", move |_, token| {
            every(cleanup_every, token, move || cleanup_once(&s))
        });
    let s = shared.clone();
    shared
        .tasks
        .spawn(Stage::Background, "file-state", move |_, token| {
            every(state_every, token, move || file_state_once(&s))
        });
}

async fn every(period: Duration, token: CancellationToken, mut f: impl FnMut() + Send + 'static) {
    let mut iv = tokio::time::interval_at(Instant::now() + period, period);
    iv.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = token.cancelled() => break,
            _ = iv.tick() => f(),
        }
    }
}

fn cleanup_once(shared: &Shared) {
    if let Err(e) = shared.ledger.prune(shared.cfg.cleanup_after) {
        eprintln!("watcher: ledger cleanup failed: {e}");
    }
    shared.counters.cleanup_runs.fetch_add(1, Relaxed);
    shared.progress.notify_waiters();
}

fn file_state_once(shared: &Shared) {
    lock(&shared.debouncer).prune();
    shared.counters.file_state_runs.fetch_add(1, Relaxed);
    shared.progress.notify_waiters();
}
