//! Judging a cohort from its devices' attempts: a pure function of the tally, so every
//! replica reaches the same verdict from the same rows and the rules are tested without
//! a fleet.
//!
//! A cohort passes when every member has finished, at least `min_reports` committed,
//! failures stay under the limit and the measured quality holds. It fails as soon as
//! the outcome is certain (more failures than the limit allows even if every other
//! device succeeds) or, once `min_reports` devices have finished, as soon as a rate or a
//! mean is out of bounds: a canary that measures a bad model stops the rollout on its
//! first reports instead of waiting for stragglers. Means, not per-device bounds: a
//! single noisy device should not stop a fleet; the device's own rule (in the manifest)
//! already guards each device.
//!
//! A failure is a device that rejected the update, timed out, or reverted it after its
//! commit (the product never confirmed the new model within its trial boots). A revert
//! comes some boots after the commit: a cohort is judged again on it while it soaks
//! (`soak_s`), but once passed it stays passed.

use serde::Serialize;
use utoipa::ToSchema;

use super::Gates;

/// What a cohort's devices have done so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Tally {
    /// Members.
    pub size: u64,
    /// Not offered yet.
    pub pending: u64,
    /// Offered and not finished, the device online.
    pub in_progress: u64,
    /// Waiting: offline. Not offered yet or not finished, the device offline: not a
    /// failure until the gates' offline limit, but the cohort waits for it.
    pub offline: u64,
    /// Committed the new model.
    pub committed: u64,
    /// Already ran it.
    pub skipped: u64,
    /// Refused or failed the update.
    pub rejected: u64,
    /// Committed, then went back to its previous model on its own: its product never
    /// confirmed the new one (`not_confirmed`). A failure, like `rejected`.
    pub reverted: u64,
    /// Silent past the stuck timeout (or offline past the offline limit).
    pub timed_out: u64,
    /// Cannot take the artifact (declared in its hello): never offered, not a failure.
    pub incompatible: u64,
    /// Cancelled or rolled back (after an abort or a rollback).
    pub other: u64,
    /// Reports that carried an on-device accuracy.
    pub measured: u64,
    /// Mean on-device accuracy of the new model, ‰.
    pub mean_accuracy_permille: Option<f64>,
    /// Mean drop below the previous model's accuracy on the same device, ‰.
    pub mean_accuracy_drop_permille: Option<f64>,
    /// Mean latency increase over the previous model, ‰.
    pub latency_increase_permille: Option<f64>,
}

impl Tally {
    /// Devices with an outcome.
    pub fn finished(&self) -> u64 {
        self.committed + self.skipped + self.failed()
    }

    /// Devices that failed.
    pub fn failed(&self) -> u64 {
        self.rejected + self.reverted + self.timed_out
    }

    /// Devices the cohort still waits for.
    pub fn waiting(&self) -> u64 {
        self.pending + self.in_progress + self.offline
    }

    /// Members that can take the version (not incompatible, not cancelled or rolled back).
    pub fn eligible(&self) -> u64 {
        self.size.saturating_sub(self.incompatible + self.other)
    }
}

/// A gate's limit and its current value.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct GateView {
    /// `min_reports`, `failure_rate`, `min_accuracy`, `accuracy_drop`, `latency_increase`.
    pub gate: &'static str,
    /// The limit.
    pub limit: f64,
    /// The value now (absent until it can be judged).
    pub value: Option<f64>,
    /// Whether it holds (absent until it can be judged).
    pub holds: Option<bool>,
}

/// A cohort's verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not decided yet.
    Wait,
    /// Every gate holds and every member finished (soak time is the engine's).
    Pass,
    /// A gate broke: which and why.
    Fail(String),
}

/// Judges `t` against `g`; also returns each gate's value for the API.
pub fn judge(g: &Gates, t: &Tally) -> (Verdict, Vec<GateView>) {
    // Incompatible devices are neither a success nor a failure: they lower the bar.
    let need = u64::from(g.min_reports).min(t.eligible());
    let judged = t.finished() >= need.max(1);
    let mut views = Vec::new();
    let mut broken = None;
    let mut gate = |gate: &'static str, limit: f64, value: Option<f64>, holds: Option<bool>| {
        if holds == Some(false) && broken.is_none() {
            broken = Some(format!("{gate}: {} against a limit of {limit}", value.map_or("-".into(), round)));
        }
        views.push(GateView { gate, limit, value, holds });
    };

    let max = f64::from(g.max_failure_permille);
    let rate = (t.finished() > 0).then(|| t.failed() as f64 * 1000.0 / t.finished() as f64);
    // Certain to fail: more failures than the limit allows over the whole cohort.
    let certain = t.failed() as f64 * 1000.0 > max * t.eligible() as f64;
    gate("failure_rate", max, rate, (judged || certain).then(|| rate.is_none_or(|r| r <= max) && !certain));

    let quality = judged && t.measured > 0;
    if let Some(min) = g.min_accuracy_permille {
        let v = t.mean_accuracy_permille;
        gate("min_accuracy", f64::from(min), v, v.filter(|_| quality).map(|v| v >= f64::from(min)));
    }
    if let Some(max) = g.max_accuracy_drop_permille {
        let v = t.mean_accuracy_drop_permille;
        gate("accuracy_drop", f64::from(max), v, v.filter(|_| quality).map(|v| v <= f64::from(max)));
    }
    if let Some(max) = g.max_latency_increase_permille {
        let v = t.latency_increase_permille;
        gate("latency_increase", f64::from(max), v, v.filter(|_| quality).map(|v| v <= f64::from(max)));
    }

    // Last, so a cohort whose devices all failed is reported by its failure rate.
    let done = t.committed + t.skipped;
    gate("min_reports", need as f64, Some(done as f64), (t.waiting() == 0).then_some(done >= need));

    let verdict = match broken {
        Some(why) => Verdict::Fail(why),
        None if views.iter().all(|v| v.holds == Some(true) || (v.holds.is_none() && v.gate != "min_reports")) => {
            Verdict::Pass
        }
        None => Verdict::Wait,
    };
    (verdict, views)
}

fn round(v: f64) -> String {
    format!("{:.1}", v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(size: u64, committed: u64, rejected: u64, in_progress: u64) -> Tally {
        Tally { size, committed, rejected, in_progress, ..Tally::default() }
    }

    #[test]
    fn a_cohort_passes_once_every_member_finished_within_the_limits() {
        let g = Gates { min_reports: 3, max_failure_permille: 200, ..Gates::default() };
        assert_eq!(judge(&g, &tally(10, 2, 0, 8)).0, Verdict::Wait);
        assert_eq!(judge(&g, &tally(10, 9, 0, 1)).0, Verdict::Wait, "a member is still working");
        assert_eq!(judge(&g, &tally(10, 9, 1, 0)).0, Verdict::Pass);
        assert_eq!(judge(&g, &tally(10, 8, 2, 0)).0, Verdict::Pass, "exactly at the limit");
    }

    #[test]
    fn offline_devices_are_waited_for_and_incompatible_ones_lower_the_bar() {
        let g = Gates { min_reports: 3, max_failure_permille: 0, ..Gates::default() };
        let offline = Tally { size: 4, committed: 3, offline: 1, ..Tally::default() };
        assert_eq!(judge(&g, &offline).0, Verdict::Wait, "an offline member is not a failure, but is waited for");
        let incompatible = Tally { size: 4, committed: 2, incompatible: 2, ..Tally::default() };
        assert_eq!(judge(&g, &incompatible).0, Verdict::Pass, "two of the two that could take it committed");
        let none = Tally { size: 2, incompatible: 2, ..Tally::default() };
        assert_eq!(judge(&g, &none).0, Verdict::Pass, "nothing to update is not a failure");
    }

    #[test]
    fn failures_stop_a_cohort_as_soon_as_they_are_judged_or_certain() {
        let g = Gates { min_reports: 4, max_failure_permille: 250, ..Gates::default() };
        // Two of two finished failed, but min_reports (4) have not finished: not judged yet,
        // and 2 failures of 10 cannot break 25 % yet.
        assert_eq!(judge(&g, &tally(10, 0, 2, 8)).0, Verdict::Wait);
        // Three failures of 10 exceed 25 % whatever the others do.
        assert!(matches!(judge(&g, &tally(10, 0, 3, 7)).0, Verdict::Fail(w) if w.starts_with("failure_rate")));
        // Judged: 2 of 4 finished failed (50 %).
        assert!(matches!(judge(&g, &tally(10, 2, 2, 6)).0, Verdict::Fail(_)));
        let timed_out = Tally { size: 4, committed: 3, timed_out: 1, ..Tally::default() };
        assert!(matches!(judge(&g, &timed_out).0, Verdict::Fail(_)), "silence counts as failure");
    }

    /// A device that committed and then reverted (its product never confirmed the model)
    /// failed, exactly as one that rejected it: the same tallies, the same verdicts.
    #[test]
    fn a_revert_after_commit_is_a_failure_like_a_rejection() {
        let g = Gates { min_reports: 2, max_failure_permille: 250, ..Gates::default() };
        let with = |rejected: u64, reverted: u64, committed: u64, in_progress: u64| Tally {
            size: 4,
            committed,
            rejected,
            reverted,
            in_progress,
            ..Tally::default()
        };
        for (committed, failed, in_progress) in [(2, 0, 2), (3, 1, 0), (2, 2, 0), (0, 2, 2), (1, 1, 2)] {
            let rejected = judge(&g, &with(failed, 0, committed, in_progress));
            let reverted = judge(&g, &with(0, failed, committed, in_progress));
            assert_eq!(rejected, reverted, "{committed} committed, {failed} failed, {in_progress} in progress");
        }
        let t = with(0, 2, 2, 0);
        assert_eq!((t.finished(), t.failed()), (4, 2));
        let (verdict, views) = judge(&g, &t);
        assert!(matches!(&verdict, Verdict::Fail(w) if w.starts_with("failure_rate")), "{verdict:?}");
        let rate = views.iter().find(|v| v.gate == "failure_rate").and_then(|v| v.value);
        assert_eq!(rate, Some(500.0));
        // Every device reverted: no success, and the failure rate says why.
        let all = with(0, 4, 0, 0);
        assert!(matches!(judge(&g, &all).0, Verdict::Fail(w) if w.starts_with("failure_rate")));
        // The same cohort passed while all four had committed: the reverts break it.
        assert_eq!(judge(&g, &with(0, 0, 4, 0)).0, Verdict::Pass);
    }

    #[test]
    fn quality_gates_read_the_means_the_devices_measured() {
        let g = Gates {
            max_failure_permille: 1000,
            min_accuracy_permille: Some(900),
            max_accuracy_drop_permille: Some(20),
            max_latency_increase_permille: Some(100),
            ..Gates::default()
        };
        let good = Tally {
            size: 2,
            committed: 2,
            measured: 2,
            mean_accuracy_permille: Some(950.0),
            mean_accuracy_drop_permille: Some(-5.0),
            latency_increase_permille: Some(50.0),
            ..Tally::default()
        };
        let (verdict, views) = judge(&g, &good);
        assert_eq!(verdict, Verdict::Pass);
        assert!(views.iter().all(|v| v.holds == Some(true)), "{views:?}");
        let worse = Tally { mean_accuracy_drop_permille: Some(30.0), ..good.clone() };
        assert!(matches!(judge(&g, &worse).0, Verdict::Fail(w) if w.starts_with("accuracy_drop")));
        let slower = Tally { latency_increase_permille: Some(150.0), ..good.clone() };
        assert!(matches!(judge(&g, &slower).0, Verdict::Fail(w) if w.starts_with("latency_increase")));
        let low = Tally { mean_accuracy_permille: Some(899.0), ..good };
        assert!(matches!(judge(&g, &low).0, Verdict::Fail(w) if w.starts_with("min_accuracy")));
    }

    #[test]
    fn a_cohort_with_no_measurement_is_judged_on_outcomes() {
        let g = Gates { min_accuracy_permille: Some(900), ..Gates::default() };
        assert_eq!(judge(&g, &Tally { size: 1, skipped: 1, ..Tally::default() }).0, Verdict::Pass);
    }
}
