//! A device's attempt within a rollout, as a state machine driven by its reports.
//!
//! Reports can arrive twice (stored once by their key, so only new ones get here), late
//! (after the engine gave up on a silent device) or out of order (replicas take the
//! shared subscription in turns). So progress only moves forward, a terminal outcome
//! the device reports always wins over the engine's `timed_out` guess (the device is the
//! truth about what it runs), and a transient refusal (`busy`: the device is working on
//! something else and will judge the offer again) changes nothing.

use mota_proto::message::{ErrorCode, Event};

/// In the cohort, not offered yet.
pub const PENDING: &str = "pending";
/// Offer published.
pub const OFFERED: &str = "offered";
/// The device already ran the target image when its cohort started.
pub const SKIPPED: &str = "skipped";
/// The new model is active on the device.
pub const COMMITTED: &str = "committed";
/// The device refused the offer or failed the update; its model is untouched.
pub const REJECTED: &str = "rejected";
/// Silent past the stuck timeout: counted as a failure until it reports.
pub const TIMED_OUT: &str = "timed_out";
/// Abandoned because the rollout was aborted.
pub const CANCELLED: &str = "cancelled";
/// A rollback command is on its way.
pub const ROLLING_BACK: &str = "rolling_back";
/// The device runs its previous model again.
pub const ROLLED_BACK: &str = "rolled_back";
/// The device could not roll back (its previous slot no longer holds the old model).
pub const ROLLBACK_FAILED: &str = "rollback_failed";

/// The in-progress states, in the order a device passes them.
const PROGRESS: [&str; 6] = [PENDING, OFFERED, "accepted", "downloading", "verified", "validated"];

/// Every state, for documentation and filters.
pub const ALL: [&str; 14] = [
    PENDING,
    OFFERED,
    "accepted",
    "downloading",
    "verified",
    "validated",
    COMMITTED,
    REJECTED,
    TIMED_OUT,
    SKIPPED,
    CANCELLED,
    ROLLING_BACK,
    ROLLED_BACK,
    ROLLBACK_FAILED,
];

fn rank(state: &str) -> Option<usize> {
    PROGRESS.iter().position(|s| *s == state)
}

/// Whether the attempt is still waiting for the device.
pub fn in_progress(state: &str) -> bool {
    rank(state).is_some()
}

/// The state a new report moves the attempt to, or `None` if it does not move it.
pub fn after(current: &str, event: Event, error: Option<ErrorCode>) -> Option<&'static str> {
    let open = in_progress(current) || current == TIMED_OUT;
    match event {
        Event::Accepted | Event::Downloading | Event::Verified | Event::Validated => {
            let next = PROGRESS[2 + event as usize];
            let forward = rank(current).is_none_or(|r| r < 2 + event as usize);
            (open && forward).then_some(next)
        }
        Event::Committed => (open || matches!(current, REJECTED | CANCELLED)).then_some(COMMITTED),
        Event::Rejected if error == Some(ErrorCode::BUSY) => None,
        Event::Rejected if error == Some(ErrorCode::ROLLBACK_UNAVAILABLE) => {
            matches!(current, ROLLING_BACK | COMMITTED).then_some(ROLLBACK_FAILED)
        }
        Event::Rejected => open.then_some(REJECTED),
        Event::RolledBack => matches!(current, COMMITTED | ROLLING_BACK | ROLLBACK_FAILED).then_some(ROLLED_BACK),
        Event::Cancelled => open.then_some(CANCELLED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_moves_forward_only() {
        assert_eq!(after(OFFERED, Event::Accepted, None), Some("accepted"));
        assert_eq!(after("accepted", Event::Downloading, None), Some("downloading"));
        assert_eq!(after("downloading", Event::Downloading, None), None);
        assert_eq!(after("verified", Event::Downloading, None), None, "a late progress report");
        assert_eq!(after("validated", Event::Committed, None), Some(COMMITTED));
        assert_eq!(after(COMMITTED, Event::Downloading, None), None);
        assert_eq!(after(COMMITTED, Event::Rejected, Some(ErrorCode::ACCURACY_DROP)), None);
    }

    #[test]
    fn the_device_overrules_the_timeout_and_transient_refusals_change_nothing() {
        assert_eq!(after(TIMED_OUT, Event::Committed, None), Some(COMMITTED));
        assert_eq!(after(TIMED_OUT, Event::Downloading, None), Some("downloading"));
        assert_eq!(after(TIMED_OUT, Event::Rejected, Some(ErrorCode::ACCURACY_DROP)), Some(REJECTED));
        assert_eq!(after(OFFERED, Event::Rejected, Some(ErrorCode::BUSY)), None);
        assert_eq!(after(REJECTED, Event::Committed, None), Some(COMMITTED));
    }

    #[test]
    fn rollback_outcomes() {
        assert_eq!(after(ROLLING_BACK, Event::RolledBack, None), Some(ROLLED_BACK));
        assert_eq!(after(COMMITTED, Event::RolledBack, None), Some(ROLLED_BACK));
        assert_eq!(after(ROLLING_BACK, Event::Rejected, Some(ErrorCode::ROLLBACK_UNAVAILABLE)), Some(ROLLBACK_FAILED));
        assert_eq!(after(OFFERED, Event::RolledBack, None), None);
        assert_eq!(after(OFFERED, Event::Rejected, Some(ErrorCode::ROLLBACK_UNAVAILABLE)), None);
        assert_eq!(after("downloading", Event::Cancelled, None), Some(CANCELLED));
        assert_eq!(after(COMMITTED, Event::Cancelled, None), None);
    }

    #[test]
    fn every_state_is_listed() {
        for s in PROGRESS {
            assert!(ALL.contains(&s));
        }
    }
}
