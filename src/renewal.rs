//! When to send `LeafCertificateExpiring` (contract §11.2), so that the
//! OCPP client needs no polling timer to know when to renew: on entering
//! the `[renewal] days_before` window (at start too), again when another
//! leaf is selected inside it (after an install), once a day while inside
//! it, and with 0 when no valid leaf of the type is left. A type that never
//! had a leaf gets none.

use crate::x509::Fingerprint;

/// A day in seconds.
const DAY: i64 = 86_400;

/// What 5.11 selects for a type now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafExpiry {
    /// No leaf of the type at all.
    NoLeaf,
    /// Leaves, none of them valid (with its key).
    NoValidLeaf,
    /// The selected leaf, with its whole days left.
    Valid {
        /// The selected leaf.
        leaf: Fingerprint,
        /// Whole days until it expires.
        days: i32,
    },
}

/// One leaf type's watch.
#[derive(Debug, Default)]
pub struct RenewalWatch {
    /// When the signal was last sent, and for which leaf (`None`: the 0 of
    /// no valid leaf). `None` outside the window.
    last: Option<(i64, Option<Fingerprint>)>,
}

impl RenewalWatch {
    /// The days to signal now, if the signal is due.
    pub fn due(&mut self, expiry: LeafExpiry, days_before: u32, now: i64) -> Option<i32> {
        let (leaf, days) = match expiry {
            LeafExpiry::NoLeaf => {
                self.last = None;
                return None;
            }
            LeafExpiry::Valid { days, .. }
                if days > i32::try_from(days_before).unwrap_or(i32::MAX) =>
            {
                self.last = None;
                return None;
            }
            // 0 says no valid leaf is left: a leaf in its last day says 1.
            LeafExpiry::Valid { leaf, days } => (Some(leaf), days.max(1)),
            LeafExpiry::NoValidLeaf => (None, 0),
        };
        let due = match self.last {
            None => true,
            Some((at, last_leaf)) => last_leaf != leaf || now - at >= DAY,
        };
        if due {
            self.last = Some((now, leaf));
            Some(days)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: i64 = 1_800_000_000;

    #[test]
    fn entering_the_window_daily_a_new_leaf_and_expiry() {
        let mut watch = RenewalWatch::default();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let valid = |leaf, days| LeafExpiry::Valid { leaf, days };
        assert_eq!(
            watch.due(LeafExpiry::NoLeaf, 30, START),
            None,
            "never had a leaf"
        );
        assert_eq!(
            watch.due(valid(a, 31), 30, START),
            None,
            "outside the window"
        );
        assert_eq!(
            watch.due(valid(a, 30), 30, START + 1),
            Some(30),
            "entering it"
        );
        assert_eq!(watch.due(valid(a, 30), 30, START + 2), None);
        assert_eq!(watch.due(valid(a, 29), 30, START + 1 + DAY - 1), None);
        assert_eq!(
            watch.due(valid(a, 29), 30, START + 1 + DAY),
            Some(29),
            "a day later"
        );
        assert_eq!(
            watch.due(valid(b, 29), 30, START + 2 + DAY),
            Some(29),
            "another leaf selected"
        );
        assert_eq!(
            watch.due(valid(b, 365), 30, START + 3 + DAY),
            None,
            "renewed: out of it"
        );
        assert_eq!(
            watch.due(valid(b, 30), 30, START + 4 + DAY),
            Some(30),
            "entering it again"
        );
        assert_eq!(
            watch.due(LeafExpiry::NoValidLeaf, 30, START + 5 + DAY),
            Some(0),
            "expired"
        );
        assert_eq!(
            watch.due(LeafExpiry::NoValidLeaf, 30, START + 6 + DAY),
            None
        );
        assert_eq!(
            watch.due(LeafExpiry::NoValidLeaf, 30, START + 5 + 2 * DAY),
            Some(0),
            "daily"
        );
        assert_eq!(
            watch.due(LeafExpiry::NoLeaf, 30, START + 6 + 2 * DAY),
            None,
            "gone"
        );
    }
}
