//! A rollout step as a pure function: from a snapshot of the rollout, its cohorts, the
//! attempts worth a decision (with their devices) and the time, to a list of decisions.
//! Nothing here reads the database or the clock, so every rule is tested on values
//! ([`tests`]), and every replica reaches the same decisions from the same rows;
//! [`super::apply`] executes them as compare-and-set updates, so a decision taken on a
//! snapshot that another replica or an operator has since changed does nothing.
//!
//! The rules, in the order a step applies them:
//! - silence, not age, is stuck: an online device that said nothing about its update
//!   for `stuck_timeout_s` (since its offer or its last report) times out; an offline
//!   device is "waiting: offline" until `offline_limit_s` (its tally's `offline`), then
//!   times out; a timed-out device that is online again is offered again up to
//!   `max_retries` times;
//! - the first cohort that has not passed is started (after approval, if the plan asks);
//! - in the active cohort, a pending device already running the version is skipped, one
//!   whose hello says it cannot take the artifact is `incompatible`, the others are
//!   offered (a patch from what they run if they decode the codec, else the full image);
//! - once a step has nothing left to move, the active cohort is judged on its tally.

use super::gates::{Tally, Verdict, judge};
use super::states::{AttemptState, CohortState, RolloutState};
use super::{Gates, OnFailure, Plan};

/// What a step sees.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Now, Unix ms, by the control plane's clock.
    pub now: i64,
    /// The rollout.
    pub rollout: RolloutSnap,
    /// Its cohorts, by position.
    pub cohorts: Vec<CohortSnap>,
    /// Attempts worth a decision: the active cohort's pending ones, and unfinished ones
    /// that have been silent long enough to be judged (the loader filters by time; the
    /// rules here decide).
    pub attempts: Vec<AttemptSnap>,
    /// The active cohort's tally, if a cohort is active.
    pub tally: Option<Tally>,
}

/// The rollout's row and what its artifact needs of a device.
#[derive(Debug, Clone)]
pub struct RolloutSnap {
    /// Id.
    pub id: i64,
    /// State.
    pub state: RolloutState,
    /// Model name.
    pub model: String,
    /// The version rolled out.
    pub version: String,
    /// Cohorts and approval.
    pub plan: Plan,
    /// When a cohort passes.
    pub gates: Gates,
    /// Highest cohort position approved.
    pub approved_through: i32,
    /// SHA-256 (hex) of the version's image.
    pub image_sha256: String,
    /// Slot bytes the image and its validation set take.
    pub slot_bytes: i64,
    /// Tensor arena bytes the model needs.
    pub arena_bytes: i64,
}

/// A cohort's row.
#[derive(Debug, Clone)]
pub struct CohortSnap {
    /// Id.
    pub id: i64,
    /// 0-based.
    pub position: i32,
    /// State.
    pub state: CohortState,
    /// When its gates first held (soak starts), Unix ms.
    pub ready_at: Option<i64>,
}

/// An attempt and its device.
#[derive(Debug, Clone)]
pub struct AttemptSnap {
    /// Device id.
    pub device: String,
    /// The attempt's cohort.
    pub cohort: i64,
    /// State.
    pub state: AttemptState,
    /// Last sign of life of the attempt, Unix ms: its claim, its last state change or
    /// the last report its device sent about it, whichever is latest.
    pub heard_at: i64,
    /// Offers sent again after a timeout.
    pub retries: u32,
    /// What the device said of itself.
    pub device_info: DeviceSnap,
}

/// What the registry knows of a device.
#[derive(Debug, Clone, Default)]
pub struct DeviceSnap {
    /// Connected (its last hello after its last will).
    pub online: bool,
    /// Its last hello, will or report, Unix ms.
    pub last_seen: i64,
    /// SHA-256 (hex) of the image it runs.
    pub running_sha256: Option<String>,
    /// Bytes of one model slot (unknown before its first hello).
    pub slot_bytes: Option<i64>,
    /// Tensor arena bytes.
    pub arena_bytes: Option<i64>,
    /// Delta codecs it decodes, a bit per codec.
    pub codecs: Option<i64>,
    /// Largest chunk it asks for.
    pub max_chunk: Option<i64>,
}

/// Why an attempt timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Silence {
    /// Online and silent past the stuck timeout.
    Stuck,
    /// Offline past the offline limit.
    Offline,
}

/// One thing a step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Time out an unfinished attempt (`heard_at` is the silence it was judged on; the
    /// apply layer only moves an attempt that has not been heard from since).
    TimeOut {
        /// Device.
        device: String,
        /// Why.
        why: Silence,
        /// The sign of life the decision was taken on.
        heard_at: i64,
    },
    /// Offer a timed-out device its offer again.
    Retry {
        /// Device.
        device: String,
    },
    /// Start a cohort.
    StartCohort {
        /// Cohort id.
        cohort: i64,
        /// 0-based.
        position: i32,
    },
    /// The device already runs the version.
    Skip {
        /// Device.
        device: String,
    },
    /// The device cannot take the artifact.
    Incompatible {
        /// Device.
        device: String,
        /// What it lacks.
        why: String,
    },
    /// Claim the attempt and publish its offer.
    Offer {
        /// Device.
        device: String,
        /// The image to patch from (`None`: the full image).
        base: Option<String>,
    },
    /// The cohort's gates hold for the first time: its soak starts now.
    MarkReady {
        /// Cohort id.
        cohort: i64,
    },
    /// The cohort passed.
    PassCohort {
        /// Cohort id.
        cohort: i64,
        /// 0-based.
        position: i32,
    },
    /// The cohort broke a gate; the rollout goes to `then`.
    FailCohort {
        /// Cohort id.
        cohort: i64,
        /// 0-based.
        position: i32,
        /// The gate and its value.
        why: String,
        /// Paused, aborted or rolled back, as the gates say.
        then: RolloutState,
    },
    /// Every cohort passed.
    Complete,
}

impl Decision {
    /// Whether the step should look again after applying it (a cohort changed, so the
    /// next one may start, or attempts moved, so the cohort may be judged).
    pub fn moves_on(&self) -> bool {
        !matches!(self, Self::MarkReady { .. } | Self::FailCohort { .. } | Self::Complete)
    }
}

/// The delta codec the backend's patches use.
const CODEC_BIT: i64 = 1 << mota_delta::format::CODEC;

/// What a step does now.
pub fn decide(s: &Snapshot) -> Vec<Decision> {
    let r = &s.rollout;
    if !RolloutState::LIVE.contains(&r.state) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let ms = |secs: u64| i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    for a in &s.attempts {
        let online = a.device_info.online;
        match a.state {
            st if st.in_flight() => {
                let (why, since, limit) = if online {
                    (Silence::Stuck, a.heard_at, r.gates.stuck_timeout_s)
                } else {
                    (Silence::Offline, a.heard_at.max(a.device_info.last_seen), r.gates.offline_limit_s)
                };
                if s.now.saturating_sub(since) >= ms(limit) {
                    out.push(Decision::TimeOut { device: a.device.clone(), why, heard_at: a.heard_at });
                }
            }
            AttemptState::TimedOut if online && a.retries < r.gates.max_retries && r.state == RolloutState::Running => {
                out.push(Decision::Retry { device: a.device.clone() });
            }
            _ => {}
        }
    }
    if r.state != RolloutState::Running {
        return out;
    }
    let Some(cohort) = s.cohorts.iter().find(|c| c.state != CohortState::Passed) else {
        out.push(Decision::Complete);
        return out;
    };
    match cohort.state {
        CohortState::Pending => {
            let awaiting = cohort.position > 0 && r.plan.approval && r.approved_through < cohort.position;
            if !awaiting {
                out.push(Decision::StartCohort { cohort: cohort.id, position: cohort.position });
            }
        }
        CohortState::Active => {
            for a in s.attempts.iter().filter(|a| a.cohort == cohort.id && a.state == AttemptState::Pending) {
                out.push(offer(r, a));
            }
            if out.is_empty()
                && let Some(tally) = &s.tally
            {
                judged(s, cohort, tally, &mut out);
            }
        }
        CohortState::Passed | CohortState::Failed => {} // failed: paused or ended
    }
    out
}

/// What to do with a pending attempt of the active cohort.
fn offer(r: &RolloutSnap, a: &AttemptSnap) -> Decision {
    let d = &a.device_info;
    let device = a.device.clone();
    if d.running_sha256.as_deref() == Some(r.image_sha256.as_str()) {
        return Decision::Skip { device };
    }
    if let Some(why) = incompatible(r, d) {
        return Decision::Incompatible { device, why };
    }
    let patches = d.codecs.is_none_or(|c| c & CODEC_BIT != 0);
    Decision::Offer { device, base: d.running_sha256.clone().filter(|_| patches) }
}

/// Slot bytes an image and its validation set take: the set is stored after the image,
/// 32-byte aligned (the agent's layout).
pub fn slot_need(image: i64, set: Option<i64>) -> i64 {
    set.map_or(image, |set| (image + 31) / 32 * 32 + set)
}

/// Why the device cannot take the rollout's artifact, from what it declared.
pub fn incompatible(r: &RolloutSnap, d: &DeviceSnap) -> Option<String> {
    if let Some(slot) = d.slot_bytes.filter(|&s| s < r.slot_bytes) {
        return Some(format!("model and validation set take {} bytes; its slot has {slot}", r.slot_bytes));
    }
    if let Some(arena) = d.arena_bytes.filter(|&a| a < r.arena_bytes) {
        return Some(format!("the model needs a {}-byte arena; it has {arena}", r.arena_bytes));
    }
    if d.max_chunk == Some(0) {
        return Some("it takes no chunks (max_chunk 0)".into());
    }
    None
}

/// The active cohort's verdict, once nothing else moves.
fn judged(s: &Snapshot, cohort: &CohortSnap, tally: &Tally, out: &mut Vec<Decision>) {
    let gates = &s.rollout.gates;
    match judge(gates, tally).0 {
        Verdict::Wait => {}
        Verdict::Fail(why) => {
            let then = match gates.on_failure {
                OnFailure::Pause => RolloutState::Paused,
                OnFailure::Abort => RolloutState::Aborted,
                OnFailure::Rollback => RolloutState::RolledBack,
            };
            out.push(Decision::FailCohort { cohort: cohort.id, position: cohort.position, why, then });
        }
        Verdict::Pass => {
            let ready = cohort.ready_at.unwrap_or(s.now);
            if cohort.ready_at.is_none() {
                out.push(Decision::MarkReady { cohort: cohort.id });
            }
            let soak = i64::try_from(gates.soak_s.saturating_mul(1000)).unwrap_or(i64::MAX);
            if s.now >= ready.saturating_add(soak) {
                out.push(Decision::PassCohort { cohort: cohort.id, position: cohort.position });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::CohortSpec;

    const IMAGE: &str = "aa";

    fn snapshot(state: RolloutState, cohorts: &[CohortState]) -> Snapshot {
        Snapshot {
            now: 1_000_000,
            rollout: RolloutSnap {
                id: 1,
                state,
                model: "m".into(),
                version: "2".into(),
                plan: Plan {
                    cohorts: vec![CohortSpec::Percent { percent: 50 }, CohortSpec::Percent { percent: 100 }],
                    canary: Vec::new(),
                    seed: None,
                    approval: false,
                },
                gates: Gates { stuck_timeout_s: 60, offline_limit_s: 600, ..Gates::default() },
                approved_through: 0,
                image_sha256: IMAGE.into(),
                slot_bytes: 10_000,
                arena_bytes: 2_000,
            },
            cohorts: cohorts
                .iter()
                .enumerate()
                .map(|(i, &state)| CohortSnap { id: 10 + i as i64, position: i as i32, state, ready_at: None })
                .collect(),
            attempts: Vec::new(),
            tally: None,
        }
    }

    fn attempt(device: &str, state: AttemptState, heard_at: i64, online: bool) -> AttemptSnap {
        AttemptSnap {
            device: device.into(),
            cohort: 10,
            state,
            heard_at,
            retries: 0,
            device_info: DeviceSnap {
                online,
                last_seen: heard_at,
                running_sha256: Some("bb".into()),
                ..DeviceSnap::default()
            },
        }
    }

    #[test]
    fn silence_not_age_is_stuck_and_offline_waits_for_its_limit() {
        let mut s = snapshot(RolloutState::Running, &[CohortState::Active, CohortState::Pending]);
        let now = s.now;
        s.attempts = vec![
            attempt("slow-but-talking", AttemptState::Downloading, now - 59_000, true),
            attempt("silent", AttemptState::Downloading, now - 60_000, true),
            attempt("offline-a-while", AttemptState::Accepted, now - 599_000, false),
            attempt("offline-too-long", AttemptState::Offered, now - 600_000, false),
        ];
        let d = decide(&s);
        let timed: Vec<_> = d
            .iter()
            .filter_map(|d| match d {
                Decision::TimeOut { device, why, .. } => Some((device.as_str(), *why)),
                _ => None,
            })
            .collect();
        assert_eq!(timed, vec![("silent", Silence::Stuck), ("offline-too-long", Silence::Offline)]);
        assert!(!d.iter().any(|d| matches!(d, Decision::PassCohort { .. })), "attempts moved: judge next step");
    }

    #[test]
    fn pending_devices_are_skipped_refused_or_offered_a_patch_they_can_decode() {
        let mut s = snapshot(RolloutState::Running, &[CohortState::Active]);
        let mut running = attempt("runs-it", AttemptState::Pending, 0, true);
        running.device_info.running_sha256 = Some(IMAGE.into());
        let mut small = attempt("small-slot", AttemptState::Pending, 0, true);
        small.device_info.slot_bytes = Some(9_999);
        let mut no_codec = attempt("no-codec", AttemptState::Pending, 0, true);
        no_codec.device_info.codecs = Some(0);
        let fine = attempt("fine", AttemptState::Pending, 0, false);
        s.attempts = vec![running, small, no_codec, fine];
        let d = decide(&s);
        assert_eq!(d[0], Decision::Skip { device: "runs-it".into() });
        assert!(
            matches!(&d[1], Decision::Incompatible { device, why } if device == "small-slot" && why.contains("slot"))
        );
        assert_eq!(d[2], Decision::Offer { device: "no-codec".into(), base: None });
        assert_eq!(
            d[3],
            Decision::Offer { device: "fine".into(), base: Some("bb".into()) },
            "offline: offered, retained"
        );
    }

    #[test]
    fn cohorts_start_in_order_after_approval_and_a_paused_rollout_offers_nothing() {
        let s = snapshot(RolloutState::Running, &[CohortState::Passed, CohortState::Pending]);
        assert_eq!(decide(&s), vec![Decision::StartCohort { cohort: 11, position: 1 }]);
        let mut s = s;
        s.rollout.plan.approval = true;
        assert_eq!(decide(&s), vec![], "awaiting approval");
        s.rollout.approved_through = 1;
        assert_eq!(decide(&s), vec![Decision::StartCohort { cohort: 11, position: 1 }]);

        let mut paused = snapshot(RolloutState::Paused, &[CohortState::Active]);
        paused.attempts = vec![attempt("p", AttemptState::Pending, 0, true)];
        assert_eq!(decide(&paused), vec![]);
        let done = snapshot(RolloutState::Aborted, &[CohortState::Active]);
        assert_eq!(decide(&done), vec![]);
    }

    #[test]
    fn a_quiet_cohort_is_judged_soaked_and_completed() {
        let mut s = snapshot(RolloutState::Running, &[CohortState::Active]);
        s.rollout.gates.soak_s = 10;
        s.tally = Some(Tally { size: 2, committed: 2, ..Tally::default() });
        assert_eq!(decide(&s), vec![Decision::MarkReady { cohort: 10 }], "soak starts");
        s.cohorts[0].ready_at = Some(s.now - 10_000);
        assert_eq!(decide(&s), vec![Decision::PassCohort { cohort: 10, position: 0 }]);
        s.cohorts[0].state = CohortState::Passed;
        assert_eq!(decide(&s), vec![Decision::Complete]);

        let mut failing = snapshot(RolloutState::Running, &[CohortState::Active]);
        failing.rollout.gates.on_failure = OnFailure::Rollback;
        failing.tally = Some(Tally { size: 2, rejected: 2, ..Tally::default() });
        assert!(matches!(&decide(&failing)[..], [Decision::FailCohort { then: RolloutState::RolledBack, .. }]));
    }

    #[test]
    fn a_timed_out_device_back_online_is_retried_a_bounded_number_of_times() {
        let mut s = snapshot(RolloutState::Running, &[CohortState::Active]);
        s.rollout.gates.max_retries = 1;
        let mut a = attempt("back", AttemptState::TimedOut, 0, true);
        s.attempts = vec![a.clone()];
        assert_eq!(decide(&s), vec![Decision::Retry { device: "back".into() }]);
        a.retries = 1;
        s.attempts = vec![a.clone()];
        s.tally = Some(Tally { size: 1, timed_out: 1, ..Tally::default() });
        assert!(!decide(&s).iter().any(|d| matches!(d, Decision::Retry { .. })));
        a.retries = 0;
        a.device_info.online = false;
        s.attempts = vec![a];
        assert!(!decide(&s).iter().any(|d| matches!(d, Decision::Retry { .. })), "not while offline");
    }
}
