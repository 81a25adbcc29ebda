//! The daemon's maintenance task: the one place where the store is looked
//! after without a call asking for it. Edits made by hand are taken in
//! (and their hash links made), TPM keys whose TPM was away are read
//! again, and garbage is collected on the `[gc] interval_seconds` timer.
//! Calls never do any of this, so a read neither writes to disk nor opens
//! the TPM.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::security::EvseSecurity;
use crate::store::StoreChange;

/// How often the task looks after the store.
pub const TICK: Duration = Duration::from_secs(1);

/// Looks after `security` until the receiver of `changes`, which
/// announces what garbage collection removed, is gone.
pub async fn run(security: Arc<EvseSecurity>, changes: mpsc::Sender<Vec<StoreChange>>) {
    let gc_every = security.config().gc.interval_seconds.max(1);
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_gc = security.now();
    loop {
        ticks.tick().await;
        let now = security.now();
        let collect = now.saturating_sub(last_gc) >= i64::try_from(gc_every).unwrap_or(i64::MAX);
        if collect {
            last_gc = now;
        }
        let store = security.clone();
        let work = move || {
            store.maintain();
            if collect {
                store.garbage_collect()
            } else {
                Vec::new()
            }
        };
        match tokio::task::spawn_blocking(work).await {
            Ok(removed) if removed.is_empty() => {}
            Ok(removed) => {
                if changes.send(removed).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::error!("store maintenance failed: {e}"),
        }
        if changes.is_closed() {
            return;
        }
    }
}
