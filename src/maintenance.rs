//! The daemon's maintenance task: the one place where the store is looked
//! after without a call asking for it. Edits made by hand are taken in
//! (and their hash links made), TPM keys whose TPM was away are read
//! again, garbage is collected on the `[gc] interval_seconds` timer, and
//! `LeafCertificateExpiring` is sent when it is due. Calls never do any of
//! this, so a read neither writes to disk nor opens the TPM.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::dbus::Announcement;
use crate::renewal::RenewalWatch;
use crate::security::EvseSecurity;
use crate::types::LeafCertificateType;

/// The types whose leaves the station renews.
const RENEWED: [LeafCertificateType; 3] = [
    LeafCertificateType::CSMS,
    LeafCertificateType::V2G,
    LeafCertificateType::V2G20,
];

/// How often the task looks after the store.
pub const TICK: Duration = Duration::from_secs(1);

/// Looks after `security` until the receiver of `announcements`, which
/// signals what garbage collection removed and the leaves about to expire,
/// is gone.
pub async fn run(security: Arc<EvseSecurity>, announcements: mpsc::Sender<Announcement>) {
    let gc_every = security.config().gc.interval_seconds.max(1);
    let days_before = security.config().renewal.days_before;
    let mut watches: [RenewalWatch; 3] = Default::default();
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
            store.prune_certificate_statuses();
            let removed = if collect {
                store.garbage_collect()
            } else {
                Vec::new()
            };
            (
                removed,
                RENEWED.map(|leaf| store.leaf_expiry(leaf)),
                store.now(),
            )
        };
        let mut due = Vec::new();
        match tokio::task::spawn_blocking(work).await {
            Ok((removed, expiries, now)) => {
                if !removed.is_empty() {
                    due.push(Announcement::Store(removed));
                }
                for ((leaf, expiry), watch) in RENEWED.iter().zip(expiries).zip(&mut watches) {
                    if let Some(days) = watch.due(expiry, days_before, now) {
                        due.push(Announcement::LeafExpiring(*leaf, days));
                    }
                }
            }
            Err(e) => tracing::error!("store maintenance failed: {e}"),
        }
        for announcement in due {
            if announcements.send(announcement).await.is_err() {
                return;
            }
        }
        if announcements.is_closed() {
            return;
        }
    }
}
