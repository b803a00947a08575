//! The rollout's three state machines as enums: a device's attempt, a cohort, a rollout.
//! Each has one string mapping (the column's value); every SQL list of states is
//! generated from the enums ([`sql_list`]), never written by hand.
//!
//! An attempt is driven by its device's reports. Reports can arrive twice (stored once by
//! their key, so only new ones get here), late (after the engine gave up on a silent
//! device) or out of order (replicas take the shared subscription in turns). So progress
//! only moves forward, a terminal outcome the device reports always wins over the
//! engine's `timed_out` guess (the device is the truth about what it runs), a transient
//! refusal (`busy`: the device is working on something else and will judge the offer
//! again) changes nothing, a commit the device later reverts (its product never
//! confirmed the new model) ends as the failure it was, and no report brings a finished
//! attempt back to unfinished (the database's one-unfinished-attempt-per-device index
//! relies on it).

use std::fmt;

use mota_proto::message::{ErrorCode, Event};

/// Declares a state enum with its one string mapping.
macro_rules! states {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// Every state, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];

            /// The column's value.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                }
            }

            /// The state a column value names.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some(Self::$variant),)*
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl State for $name {
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
        }
    };
}

/// A state stored as text.
pub trait State: Copy {
    /// The column's value.
    fn as_str(self) -> &'static str;
}

/// `('a', 'b', ...)`: a SQL list of states, for `state IN` (the values are our own
/// constants, never input).
pub fn sql_list<S: State>(states: &[S]) -> String {
    let quoted: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
    format!("({})", quoted.join(", "))
}

states! {
    /// A device's attempt within a rollout.
    AttemptState {
        /// In the cohort, not offered yet.
        Pending = "pending",
        /// Claimed by the engine and its offer published.
        Offered = "offered",
        /// The device verified the offer and took the job.
        Accepted = "accepted",
        /// The device is fetching the patch or image.
        Downloading = "downloading",
        /// The rebuilt image's digest matched.
        Verified = "verified",
        /// The new model met its validation rule on the device.
        Validated = "validated",
        /// The new model is active on the device.
        Committed = "committed",
        /// The device refused the offer or failed the update; its model is untouched.
        Rejected = "rejected",
        /// Silent past the stuck timeout while online, or offline past the offline limit:
        /// counted as a failure until the device reports.
        TimedOut = "timed_out",
        /// The device already ran the target image when its cohort started.
        Skipped = "skipped",
        /// What the device declared in its hello cannot take the artifact (slot, arena,
        /// chunk size): never offered, never a failure.
        Incompatible = "incompatible",
        /// Abandoned because the rollout ended (aborted, or completed without it).
        Cancelled = "cancelled",
        /// A rollback command is on its way.
        RollingBack = "rolling_back",
        /// The device runs its previous model again.
        RolledBack = "rolled_back",
        /// The device could not roll back (its previous slot no longer holds the old model).
        RollbackFailed = "rollback_failed",
        /// The device committed a later rollout's model, so rolling this one back was not
        /// sent: it would have replaced the newer model.
        Superseded = "superseded",
        /// The device committed, but its product never confirmed the new model within its
        /// trial boots (`error_code`: `not_confirmed`), so the device went back to its
        /// previous model on its own: a failure, like `rejected`, and nothing left to roll
        /// back.
        Reverted = "reverted",
    }
}

states! {
    /// A cohort's life.
    CohortState {
        /// Waiting for the cohort before it (and for approval, if the plan asks).
        Pending = "pending",
        /// Being offered and judged.
        Active = "active",
        /// Its gates held (or an operator accepted it).
        Passed = "passed",
        /// A gate broke.
        Failed = "failed",
    }
}

states! {
    /// A rollout's life.
    RolloutState {
        /// Offering cohorts.
        Running = "running",
        /// Stopped by a gate or an operator; `resume` or `abort`.
        Paused = "paused",
        /// Every cohort passed.
        Completed = "completed",
        /// Ended early.
        Aborted = "aborted",
        /// Ended, and the devices that took the version were sent back.
        RolledBack = "rolled_back",
    }
}

states! {
    /// What a queued command (the `commands` outbox) asks a device; the engine signs it
    /// as a `mota_proto::CommandBody` when it sends it.
    CommandKind {
        /// Return to the model the attempt's commit left in the other slot.
        Rollback = "rollback",
        /// Abandon the attempt's download.
        Cancel = "cancel",
    }
}

impl RolloutState {
    /// Not ended: the engine steps it.
    pub const LIVE: &'static [Self] = &[Self::Running, Self::Paused];

    /// Ended with its version withdrawn: a device still committing it is sent back.
    pub fn withdrawn(self) -> bool {
        matches!(self, Self::Aborted | Self::RolledBack)
    }
}

impl AttemptState {
    /// The device is working on the offer.
    pub const IN_FLIGHT: &'static [Self] =
        &[Self::Offered, Self::Accepted, Self::Downloading, Self::Verified, Self::Validated];

    /// Not finished: a device is in at most one such attempt (the database's unique
    /// index on `attempts.open_device`, which holds the device id exactly while the
    /// attempt is in one of these).
    pub const UNFINISHED: &'static [Self] = &[
        Self::Pending,
        Self::Offered,
        Self::Accepted,
        Self::Downloading,
        Self::Verified,
        Self::Validated,
        Self::TimedOut,
    ];

    /// Unfinished and offered: the device may hold the offer (retained, or in its job).
    pub const HOLDS_OFFER: &'static [Self] =
        &[Self::Offered, Self::Accepted, Self::Downloading, Self::Verified, Self::Validated, Self::TimedOut];

    /// Whether the device is working on the offer.
    pub fn in_flight(self) -> bool {
        Self::IN_FLIGHT.contains(&self)
    }

    /// Whether the attempt is unfinished.
    pub fn unfinished(self) -> bool {
        Self::UNFINISHED.contains(&self)
    }

    /// The SQL `SET` of a move to this state: a finished state also clears
    /// `open_device`, which releases the device for another rollout.
    pub fn set_sql(self) -> String {
        if self.unfinished() { format!("state = '{self}'") } else { format!("state = '{self}', open_device = NULL") }
    }

    /// Position along the update's progress (pending first), for the forward-only rule.
    fn progress(self) -> Option<u8> {
        Some(match self {
            Self::Pending => 0,
            Self::Offered => 1,
            Self::Accepted => 2,
            Self::Downloading => 3,
            Self::Verified => 4,
            Self::Validated => 5,
            _ => return None,
        })
    }

    /// The state a new report moves the attempt to, or `None` if it does not move it.
    pub fn after(self, event: Event, error: Option<ErrorCode>) -> Option<Self> {
        use AttemptState as A;
        let open = self.unfinished();
        let forward = |next: Self| {
            let ahead = match (self.progress(), next.progress()) {
                (Some(now), Some(then)) => now < then,
                _ => true, // timed out: any sign of life moves it
            };
            (open && ahead).then_some(next)
        };
        // Where a device's commit is taken: while unfinished, and over a refusal or a
        // cancel the device overtook.
        let committable = open || matches!(self, A::Rejected | A::Cancelled);
        match event {
            Event::Accepted => forward(A::Accepted),
            Event::Downloading => forward(A::Downloading),
            Event::Verified => forward(A::Verified),
            Event::Validated => forward(A::Validated),
            Event::Committed => committable.then_some(A::Committed),
            Event::Rejected if error == Some(ErrorCode::BUSY) => None,
            // A device refuses a signed rollback it cannot carry out: the model is gone
            // from its other slot, is not the one named, or is below its counter.
            Event::Rejected
                if error.is_some_and(|e| {
                    [
                        ErrorCode::ROLLBACK_UNAVAILABLE,
                        ErrorCode::ROLLBACK_TARGET_MISMATCH,
                        ErrorCode::ROLLBACK_BELOW_COUNTER,
                    ]
                    .contains(&e)
                }) =>
            {
                matches!(self, A::RollingBack | A::Committed).then_some(A::RollbackFailed)
            }
            Event::Rejected => open.then_some(A::Rejected),
            Event::RolledBack => {
                matches!(self, A::Committed | A::RollingBack | A::RollbackFailed).then_some(A::RolledBack)
            }
            Event::Cancelled => open.then_some(A::Cancelled),
            // A device reverts only a model it committed: the commit is behind it, so the
            // revert is taken wherever that commit would have been (the `committed` report
            // lost, replaced on the device by this one, or overtaken by it) except before
            // any offer was claimed, and over a rollback on its way, which has nothing left
            // to do. An attempt that never got that far moves nothing.
            Event::Reverted => ((committable && self != A::Pending)
                || matches!(self, A::Committed | A::RollingBack | A::RollbackFailed))
            .then_some(A::Reverted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AttemptState as A;
    use super::*;

    const ERRORS: [Option<ErrorCode>; 5] = [
        None,
        Some(ErrorCode::BUSY),
        Some(ErrorCode::ROLLBACK_UNAVAILABLE),
        Some(ErrorCode::ACCURACY_DROP),
        Some(ErrorCode::NOT_CONFIRMED),
    ];

    #[test]
    fn a_refused_rollback_fails_the_rollback_and_a_busy_one_waits() {
        for code in
            [ErrorCode::ROLLBACK_UNAVAILABLE, ErrorCode::ROLLBACK_TARGET_MISMATCH, ErrorCode::ROLLBACK_BELOW_COUNTER]
        {
            assert_eq!(A::RollingBack.after(Event::Rejected, Some(code)), Some(A::RollbackFailed), "{code}");
            assert_eq!(A::RolledBack.after(Event::Rejected, Some(code)), None, "{code}");
        }
        assert_eq!(A::RollingBack.after(Event::Rejected, Some(ErrorCode::BUSY)), None);
    }

    #[test]
    fn progress_moves_forward_only() {
        assert_eq!(A::Offered.after(Event::Accepted, None), Some(A::Accepted));
        assert_eq!(A::Pending.after(Event::Accepted, None), Some(A::Accepted), "a report before the claim's write");
        assert_eq!(A::Accepted.after(Event::Downloading, None), Some(A::Downloading));
        assert_eq!(A::Downloading.after(Event::Downloading, None), None);
        assert_eq!(A::Verified.after(Event::Downloading, None), None, "a late progress report");
        assert_eq!(A::Validated.after(Event::Committed, None), Some(A::Committed));
        assert_eq!(A::Committed.after(Event::Downloading, None), None);
        assert_eq!(A::Committed.after(Event::Rejected, Some(ErrorCode::ACCURACY_DROP)), None);
    }

    #[test]
    fn the_device_overrules_the_timeout_and_transient_refusals_change_nothing() {
        assert_eq!(A::TimedOut.after(Event::Committed, None), Some(A::Committed));
        assert_eq!(A::TimedOut.after(Event::Downloading, None), Some(A::Downloading));
        assert_eq!(A::TimedOut.after(Event::Rejected, Some(ErrorCode::ACCURACY_DROP)), Some(A::Rejected));
        assert_eq!(A::Offered.after(Event::Rejected, Some(ErrorCode::BUSY)), None);
        assert_eq!(A::Rejected.after(Event::Committed, None), Some(A::Committed));
        assert_eq!(A::Cancelled.after(Event::Committed, None), Some(A::Committed), "committed despite a cancel");
        assert_eq!(A::Incompatible.after(Event::Committed, None), None);
    }

    #[test]
    fn rollback_outcomes() {
        assert_eq!(A::RollingBack.after(Event::RolledBack, None), Some(A::RolledBack));
        assert_eq!(A::Committed.after(Event::RolledBack, None), Some(A::RolledBack));
        assert_eq!(
            A::RollingBack.after(Event::Rejected, Some(ErrorCode::ROLLBACK_UNAVAILABLE)),
            Some(A::RollbackFailed)
        );
        assert_eq!(A::Offered.after(Event::RolledBack, None), None);
        assert_eq!(A::Offered.after(Event::Rejected, Some(ErrorCode::ROLLBACK_UNAVAILABLE)), None);
        assert_eq!(A::Downloading.after(Event::Cancelled, None), Some(A::Cancelled));
        assert_eq!(A::Committed.after(Event::Cancelled, None), None);
        assert_eq!(A::Superseded.after(Event::RolledBack, None), None);
    }

    /// A commit the product never confirmed ends `reverted`, a failure with nothing left
    /// to roll back; an attempt that never got near a commit is not moved by it.
    #[test]
    fn a_revert_ends_a_committed_attempt_and_any_rollback_on_its_way() {
        let not_confirmed = Some(ErrorCode::NOT_CONFIRMED);
        for from in [A::Committed, A::RollingBack, A::RollbackFailed] {
            assert_eq!(from.after(Event::Reverted, not_confirmed), Some(A::Reverted), "{from}");
        }
        // The `committed` report lost (the device replaced it by this one) or overtaken:
        // the revert says the device committed, so it is taken where the commit would be.
        for from in [A::Offered, A::Downloading, A::Validated, A::TimedOut, A::Rejected, A::Cancelled] {
            assert_eq!(from.after(Event::Reverted, not_confirmed), Some(A::Reverted), "{from}");
        }
        for from in [A::Pending, A::Skipped, A::Incompatible, A::RolledBack, A::Superseded, A::Reverted] {
            assert_eq!(from.after(Event::Reverted, not_confirmed), None, "{from}");
        }
        // Nothing brings a reverted attempt back: not a late or repeated commit, nor the
        // answer to a rollback that was already on its way.
        for event in Event::ALL {
            for error in ERRORS {
                assert_eq!(A::Reverted.after(event, error), None, "{event:?} {error:?}");
            }
        }
        assert!(!A::Reverted.unfinished() && !A::HOLDS_OFFER.contains(&A::Reverted));
    }

    /// The one-unfinished-attempt index is kept by writes that only ever clear
    /// `open_device`: no report may bring a finished attempt back.
    #[test]
    fn no_report_reopens_a_finished_attempt() {
        for &from in A::ALL {
            for event in Event::ALL {
                for error in ERRORS {
                    if let Some(to) = from.after(event, error) {
                        assert!(from.unfinished() || !to.unfinished(), "{from} -> {to} on {event:?}");
                        assert_ne!(to, A::Pending, "only the engine's claim leaves pending");
                        // A terminal report ends the attempt (`busy` aside: it moves nothing).
                        if event.is_terminal() {
                            assert!(!to.unfinished(), "{from} -> {to} on {event:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_lists_agree() {
        let offered: Vec<A> = A::UNFINISHED.iter().copied().filter(|&s| s != A::Pending).collect();
        assert_eq!(offered, A::HOLDS_OFFER);
        assert!(A::IN_FLIGHT.iter().all(|s| A::HOLDS_OFFER.contains(s)));
    }

    #[test]
    fn strings_round_trip_and_lists_are_generated() {
        for &s in A::ALL {
            assert_eq!(A::parse(s.as_str()), Some(s));
        }
        for &s in CohortState::ALL {
            assert_eq!(CohortState::parse(s.as_str()), Some(s));
        }
        for &s in RolloutState::ALL {
            assert_eq!(RolloutState::parse(s.as_str()), Some(s));
        }
        assert_eq!(A::parse("nonsense"), None);
        assert_eq!(sql_list(RolloutState::LIVE), "('running', 'paused')");
    }

    /// The migration's backfill and index predicate name the unfinished states; they must
    /// be the enum's.
    #[test]
    fn the_migrations_list_the_unfinished_states() {
        let list = sql_list(A::UNFINISHED);
        for engine in ["sqlite", "postgres"] {
            let path = format!("{}/../migrations/{engine}/0007_rollout_control.sql", env!("CARGO_MANIFEST_DIR"));
            let sql = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(sql.contains(&list), "{path} must name {list}");
        }
    }
}
