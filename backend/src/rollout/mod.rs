//! Rollouts: a model version walked through a fleet one cohort at a time, judged by what
//! the devices measured.
//!
//! The shape follows what operators know: hawkBit's cascading groups with a pause or an
//! approval between them, AWS IoT Jobs' abort criteria and in-progress timeout, Azure
//! Device Update's cloud-initiated rollback. What is ours: the gates also read the
//! accuracy and latency each device measured on its validation set, against the model
//! it ran before, and a cohort only counts a device once it has *committed* (the new
//! slot active after on-device validation), never on "downloaded".
//!
//! The module reads as the control plane is built: [`states`] (the three state machines
//! as enums), [`decide`] (a rollout step as a pure function of a snapshot), [`apply`]
//! (the decisions executed as compare-and-set updates, offers claimed before they are
//! published), [`engine`] (the loop: lease, snapshot, decide, apply, the outbox),
//! [`actions`] (what operators do), [`create`] and [`view`]. The database is the only
//! coordination between replicas.

pub mod actions;
pub mod apply;
pub mod create;
pub mod decide;
pub mod engine;
pub mod gates;
pub mod states;
pub mod view;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Which devices a rollout targets.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Device class: the model's own (the default); any other is refused.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9._-]{1,32}$")]
    pub class: Option<String>,
    /// Devices carrying every one of these tags.
    #[serde(default)]
    #[schema(max_items = 16)]
    pub tags: Vec<String>,
    /// Only these devices (all matching devices when empty).
    #[serde(default)]
    #[schema(max_items = 10000)]
    pub ids: Vec<String>,
}

/// How big a cohort is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum CohortSpec {
    /// Cumulative: after this cohort, this percentage of the selected devices has been
    /// offered the version (1 %, 10 %, 50 %, 100 %).
    Percent {
        /// 1 to 100, increasing along the plan.
        #[schema(minimum = 1, maximum = 100)]
        percent: u32,
    },
    /// This many more devices.
    Count {
        /// At least 1.
        #[schema(minimum = 1, maximum = 1000000)]
        count: u32,
    },
}

/// The cohorts and how the rollout moves between them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The cohorts, in order.
    #[schema(min_items = 1, max_items = 20)]
    pub cohorts: Vec<CohortSpec>,
    /// Devices that go first, in the first cohort (which grows to hold them all).
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub canary: Vec<String>,
    /// Seed of the stable hash that orders the other devices; default: the model's name,
    /// so a rollout created again for the same model (a retry) lands every device in the
    /// same cohort. Change it to rotate who goes early.
    #[serde(default)]
    #[schema(max_length = 64)]
    pub seed: Option<String>,
    /// Each cohort after the first waits for `approve` once the one before has passed.
    #[serde(default)]
    pub approval: bool,
}

/// What a cohort's gates breaking does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Stop offering; wait for an operator (`resume` accepts the cohort, `abort` ends).
    #[default]
    Pause,
    /// End the rollout: cancel what is in flight.
    Abort,
    /// End it and send the devices that took the version back to their previous model.
    Rollback,
}

/// When a cohort passes. Every gate is judged on the cohort's own devices.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Gates {
    /// Devices that must have committed before the cohort can pass (capped at the
    /// cohort's size); the failure rate and the quality gates are judged once this many
    /// devices have finished.
    #[serde(default = "one")]
    #[schema(minimum = 1, maximum = 1000000)]
    pub min_reports: u32,
    /// Largest share of finished devices that may fail (rejected, reverted after their
    /// commit, or timed out), ‰.
    #[serde(default = "hundred")]
    #[schema(minimum = 0, maximum = 1000)]
    pub max_failure_permille: u16,
    /// An online device that has said nothing about its update for this long (since its
    /// offer or its last report) counts as failed, until it reports (`timed_out`).
    #[serde(default = "hour")]
    #[schema(minimum = 1, maximum = 2592000)]
    pub stuck_timeout_s: u64,
    /// An offline device is "waiting: offline", not a failure, until it has been offline
    /// (and silent) this long; then it counts as `timed_out`.
    #[serde(default = "day")]
    #[schema(minimum = 1, maximum = 2592000)]
    pub offline_limit_s: u64,
    /// Times a timed-out device (online again) is sent its offer again before it stays
    /// failed (AWS IoT Jobs' retry criteria for timeouts; 0: never).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 10)]
    pub max_retries: u32,
    /// Lowest mean on-device accuracy of the new model, ‰.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1000)]
    pub min_accuracy_permille: Option<u16>,
    /// Largest mean drop of on-device accuracy below the model each device ran before, ‰.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1000)]
    pub max_accuracy_drop_permille: Option<u16>,
    /// Largest increase of mean inference latency over the previous model's, ‰.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 100000)]
    pub max_latency_increase_permille: Option<u32>,
    /// Time the gates must keep holding after they are first met before the cohort passes
    /// (long enough for the devices' trial boots: a device that reverts its commit during
    /// the soak fails the cohort; one that reverts after the cohort passed does not).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2592000)]
    pub soak_s: u64,
    /// What a broken gate does.
    #[serde(default)]
    pub on_failure: OnFailure,
}

fn one() -> u32 {
    1
}
fn hundred() -> u16 {
    100
}
fn hour() -> u64 {
    3600
}
fn day() -> u64 {
    86_400
}

impl Default for Gates {
    fn default() -> Self {
        Self {
            min_reports: one(),
            max_failure_permille: hundred(),
            stuck_timeout_s: hour(),
            offline_limit_s: day(),
            max_retries: 0,
            min_accuracy_permille: None,
            max_accuracy_drop_permille: None,
            max_latency_increase_permille: None,
            soak_s: 0,
            on_failure: OnFailure::Pause,
        }
    }
}

/// Why a rollout request was refused.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// The request is malformed or contradicts itself.
    #[error("{0}")]
    Invalid(String),
    /// The rollout, model or version does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The rollout is not in a state that allows this action.
    #[error("{0}")]
    Conflict(String),
    /// Signing an offer failed.
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}
