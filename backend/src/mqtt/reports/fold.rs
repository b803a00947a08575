//! A batch's new reports folded into one change per attempt.
//!
//! The database pays per statement, not per row: a statement per report that moved an
//! attempt was most of the cost of ingest (BENCHMARKS.md, issue 7). So the writer reads
//! the batch's attempts once, folds their reports here in arrival order through the same
//! state machine a single report would go through, and writes each attempt once. The
//! result is what applying the reports one at a time would have left: the last state
//! reached, each measurement from the last report that carried it, the first manifest.
//!
//! A `committed` report for a rollout that was aborted or rolled back (the device
//! committed before its `cancel` arrived, or ignored it) leaves the attempt
//! `rolling_back` instead, and the writer queues the device's `rollback` in the same
//! transaction: every device that still commits a withdrawn version is sent back.
//!
//! A `reverted` report (the device's product never confirmed the model it committed, so
//! the device went back to its previous one by itself) returns the device's record to
//! the image it ran before, like `rolled_back`, and a rollback it overtakes is not
//! queued: there is nothing left to send back. A device that kept the version of an
//! aborted rollout (it had committed) and reverts it is queued a `cancel` instead, a
//! no-op on the device that clears the withdrawn offer it kept.

use std::collections::BTreeMap;

use mota_proto::message::{Event, Status};

use crate::rollout::states::AttemptState;

/// Which image a device runs after its attempt's reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Running {
    /// The rollout's version (it committed).
    Target,
    /// The image it ran before the attempt (it rolled back, or reverted).
    Base,
}

/// What the batch does to one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Change {
    /// The state read at the start of the batch; the write expects it still.
    pub from: String,
    /// The state the reports leave it in.
    pub to: AttemptState,
    pub error_code: Option<i32>,
    pub accuracy_permille: Option<i32>,
    pub prev_accuracy_permille: Option<i32>,
    pub latency_us: Option<i64>,
    pub prev_latency_us: Option<i64>,
    pub arena_used: Option<i64>,
    pub bytes_done: Option<i64>,
    /// The first manifest digest (hex) a report named; the attempt keeps one it has.
    pub manifest: Option<String>,
    /// What a rollback returns to, as a commit named it: image and manifest (hex).
    pub rollback_to: Option<(String, Option<String>)>,
    /// Set when a report changed what the device runs; the last one wins.
    pub running: Option<Running>,
    /// The report number of the report that last set `running`.
    pub running_seq: Option<i64>,
    /// How many reports moved the attempt.
    pub moves: usize,
    /// It committed a withdrawn rollout: a `rollback` is to be queued.
    pub send_back: bool,
    /// It reverted the version of an aborted rollout it had kept: a `cancel` is to be
    /// queued (it clears the withdrawn offer; see the module's head).
    pub clear_offer: bool,
}

impl Change {
    fn new(from: &str) -> Self {
        Self {
            from: from.to_owned(),
            to: AttemptState::Pending,
            error_code: None,
            accuracy_permille: None,
            prev_accuracy_permille: None,
            latency_us: None,
            prev_latency_us: None,
            arena_used: None,
            bytes_done: None,
            manifest: None,
            rollback_to: None,
            running: None,
            running_seq: None,
            moves: 0,
            send_back: false,
            clear_offer: false,
        }
    }

    fn apply(&mut self, to: AttemptState, s: &Status<'_>) {
        fn last<T>(slot: &mut Option<T>, new: Option<T>) {
            if new.is_some() {
                *slot = new;
            }
        }
        self.to = to;
        last(&mut self.error_code, s.error.map(|e| i32::from(e.0)));
        last(&mut self.accuracy_permille, s.accuracy_permille.map(i32::from));
        last(&mut self.prev_accuracy_permille, s.previous_accuracy_permille.map(i32::from));
        last(&mut self.latency_us, s.latency_us.map(i64::from));
        last(&mut self.prev_latency_us, s.previous_latency_us.map(i64::from));
        last(&mut self.arena_used, s.arena_used.map(i64::from));
        last(&mut self.bytes_done, s.bytes_done.map(i64::from));
        if self.manifest.is_none() {
            self.manifest = s.manifest.map(|m| crate::blobs::hex(&m.0));
        }
        last(
            &mut self.rollback_to,
            s.rollback_target.map(|t| (crate::blobs::hex(&t.image.0), t.manifest.map(|m| crate::blobs::hex(&m.0)))),
        );
        let running = match s.event {
            Event::Committed => Some(Running::Target),
            Event::RolledBack | Event::Reverted => Some(Running::Base),
            _ => None,
        };
        if running.is_some() {
            self.running = running;
            self.running_seq = Some(i64::from(s.seq));
        }
        self.moves += 1;
    }
}

/// Folds `reports` ((rollout, device), status), new and in arrival order, into the
/// attempts whose current states `state_now` gives; reports of attempts it does not know
/// are ignored. `withdrawn` says which rollouts were aborted or rolled back. Only attempts that moved are returned, ordered by key (the order rows are
/// written in, so concurrent writers lock them in one order).
pub(super) fn fold<'a, 's>(
    state_now: impl Fn(&(i64, String)) -> Option<&'s str>,
    withdrawn: impl Fn(i64) -> bool,
    reports: impl IntoIterator<Item = ((i64, &'a str), &'a Status<'a>)>,
) -> BTreeMap<(i64, String), Change> {
    let mut changes: BTreeMap<(i64, String), Change> = BTreeMap::new();
    for ((rollout, device), status) in reports {
        let key = (rollout, device.to_owned());
        let Some(now) = state_now(&key) else { continue };
        let Some(stored) = AttemptState::parse(now) else { continue };
        let current = changes.get(&key).map_or(stored, |c| c.to);
        let Some(mut next) = current.after(status.event, status.error) else { continue };
        let send_back = next == AttemptState::Committed && withdrawn(rollout);
        if send_back {
            next = AttemptState::RollingBack;
        }
        let change = changes.entry(key).or_insert_with(|| Change::new(now));
        change.apply(next, status);
        // A rollback queued by an earlier report of the batch is dropped by a later one
        // that ends it (`rolled_back`, or `reverted`: the device is back already).
        change.send_back = send_back || (change.send_back && next == AttemptState::RollingBack);
        // A device that kept the version of an aborted rollout kept its offer too; any
        // other was told something (a cancel, a rollback) that clears it.
        change.clear_offer = current == AttemptState::Committed && next == AttemptState::Reverted && withdrawn(rollout);
    }
    changes
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use mota_proto::Digest;
    use mota_proto::message::ErrorCode;

    use super::*;

    fn status(seq: u32, event: Event) -> Status<'static> {
        Status { rollout_id: 7, seq, event, ..Status::default() }
    }

    fn one(state: &str, reports: &[Status<'static>]) -> Option<Change> {
        let now = HashMap::from([((7, "d".to_owned()), state.to_owned())]);
        let mut out = fold(|k| now.get(k).map(String::as_str), |_| false, reports.iter().map(|s| ((7, "d"), s)));
        out.remove(&(7, "d".to_owned()))
    }

    /// Folding a batch leaves what applying its reports one by one leaves.
    #[test]
    fn a_whole_update_in_one_batch_is_one_change() {
        let mut validated = status(9, Event::Validated);
        validated.accuracy_permille = Some(950);
        validated.previous_accuracy_permille = Some(900);
        validated.latency_us = Some(1200);
        let mut accepted = status(1, Event::Accepted);
        accepted.manifest = Some(Digest([1; 32]));
        let mut downloading = status(2, Event::Downloading);
        downloading.bytes_done = Some(4096);
        downloading.manifest = Some(Digest([2; 32]));
        let mut later = status(3, Event::Downloading);
        later.bytes_done = Some(8192);
        let mut verified = status(8, Event::Verified);
        verified.bytes_done = Some(26_933);
        let batch = [accepted, downloading, later, verified, validated, status(10, Event::Committed)];
        let c = one("offered", &batch).expect("moved");
        // The second `downloading` does not move the attempt, so it counts for nothing.
        assert_eq!((c.from.as_str(), c.to, c.moves), ("offered", AttemptState::Committed, 5));
        assert_eq!(c.bytes_done, Some(26_933), "the last moving report's measurement");
        assert_eq!(c.manifest, Some(crate::blobs::hex(&[1; 32])), "the first manifest");
        assert_eq!((c.accuracy_permille, c.prev_accuracy_permille, c.latency_us), (Some(950), Some(900), Some(1200)));
        assert_eq!(c.running, Some(Running::Target));
    }

    #[test]
    fn reports_that_do_not_move_change_nothing() {
        // Progress never goes back; a busy refusal changes nothing.
        let mut busy = status(4, Event::Rejected);
        busy.error = Some(ErrorCode::BUSY);
        assert_eq!(one("verified", &[status(1, Event::Downloading), busy]), None);
        // A report for an attempt the batch did not read is dropped.
        assert!(fold(|_| None, |_| false, [((7, "d"), &status(1, Event::Accepted))]).is_empty());
    }

    #[test]
    fn the_last_transition_that_touches_the_running_image_wins() {
        let c = one("validated", &[status(5, Event::Committed), status(6, Event::RolledBack)]).expect("moved");
        assert_eq!((c.to, c.running, c.moves), (AttemptState::RolledBack, Some(Running::Base), 2));
        // A refusal after the engine timed the device out still counts.
        let mut refused = status(2, Event::Rejected);
        refused.error = Some(ErrorCode(3));
        let c = one("timed_out", &[refused]).expect("moved");
        assert_eq!(
            (c.from.as_str(), c.to, c.error_code, c.running),
            ("timed_out", AttemptState::Rejected, Some(3), None)
        );
    }

    /// Defect 2 of issue 16: a device that committed after its cancel was sent was never
    /// sent a rollback.
    #[test]
    fn a_commit_of_a_withdrawn_rollout_is_sent_back() {
        let reports = [status(4, Event::Committed)];
        let out = fold(|_| Some("cancelled"), |rollout| rollout == 7, reports.iter().map(|s| ((7, "d"), s)));
        let c = &out[&(7, "d".to_owned())];
        assert_eq!((c.to, c.send_back, c.running), (AttemptState::RollingBack, true, Some(Running::Target)));
        let out = fold(|_| Some("cancelled"), |_| false, reports.iter().map(|s| ((7, "d"), s)));
        assert_eq!(out[&(7, "d".to_owned())].to, AttemptState::Committed, "a completed rollout keeps it");
        let both = [status(4, Event::Committed), status(5, Event::RolledBack)];
        let out = fold(|_| Some("validated"), |_| true, both.iter().map(|s| ((7, "d"), s)));
        let c = &out[&(7, "d".to_owned())];
        assert_eq!((c.to, c.send_back), (AttemptState::RolledBack, false), "already back: nothing to send");
    }

    fn reverted(seq: u32) -> Status<'static> {
        let mut s = status(seq, Event::Reverted);
        s.error = Some(ErrorCode::NOT_CONFIRMED);
        s.manifest = Some(Digest([3; 32]));
        s
    }

    /// A device that reverts the model it committed runs its previous one again, and a
    /// rollback it overtook (queued in the same batch, or by an earlier one) has nothing
    /// left to do: none is queued. One that kept an aborted rollout's version has the
    /// offer it kept cleared.
    #[test]
    fn a_revert_returns_the_device_to_its_previous_model_and_sends_nothing_back() {
        let c = one("validated", &[status(5, Event::Committed), reverted(6)]).expect("moved");
        assert_eq!(
            (c.to, c.running, c.running_seq, c.moves),
            (AttemptState::Reverted, Some(Running::Base), Some(6), 2)
        );
        assert_eq!(c.error_code, Some(i32::from(ErrorCode::NOT_CONFIRMED.0)));
        assert!(!c.send_back && !c.clear_offer, "a live rollout: nothing to send");

        // Committed after the cancel of an abort, then reverted: no rollback to queue,
        // and the cancel already cleared the offer.
        let both = [status(4, Event::Committed), reverted(5)];
        let out = fold(|_| Some("cancelled"), |_| true, both.iter().map(|s| ((7, "d"), s)));
        let c = &out[&(7, "d".to_owned())];
        assert_eq!((c.to, c.send_back, c.clear_offer), (AttemptState::Reverted, false, false), "withdrawn");
        assert_eq!(c.running, Some(Running::Base));

        // Kept after an abort, then reverted: its kept offer is to be cleared.
        let out = fold(|_| Some("committed"), |_| true, [((7, "d"), &reverted(6))]);
        let c = &out[&(7, "d".to_owned())];
        assert_eq!((c.to, c.send_back, c.clear_offer), (AttemptState::Reverted, false, true));

        // A rollback queued earlier (the attempt is `rolling_back`) is overtaken.
        let out = fold(|_| Some("rolling_back"), |_| true, [((7, "d"), &reverted(9))]);
        let c = &out[&(7, "d".to_owned())];
        assert_eq!(
            (c.from.as_str(), c.to, c.send_back, c.clear_offer, c.running),
            ("rolling_back", AttemptState::Reverted, false, false, Some(Running::Base))
        );

        // Never offered, or finished otherwise: nothing moves, the record stays.
        for state in ["pending", "rolled_back", "superseded", "skipped"] {
            assert_eq!(one(state, &[reverted(3)]), None, "{state}");
        }
    }
}
