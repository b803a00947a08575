//! The agent's persistent record: everything it must know after a power cut.
//!
//! The whole record is ONE value in the state map, so every decision (accept an offer,
//! record progress, commit, reject, roll back) is one `store_item`: sequential-storage
//! keeps the old value valid until the new one is completely written, so a cut at any
//! instant leaves either the record before the decision or the one after it. The commit
//! point of an update is the store that switches `active` and raises `counter` together
//! with the pending `committed` report.
//!
//! Encoding (`record.rs`): a fixed little-endian layout behind a format byte, written
//! and read by hand. (The first version used minicbor's derive; its generated decoders
//! cost about 10 KiB of flash and 5 KiB of stack on a Cortex-M4 for one private record.)

use mota_proto::message::{ErrorCode, Event, Status};
use mota_proto::revocation::MAX_REVOKED;
use mota_proto::{Delta, Digest, Image, KeyId, RevocationBody, Target, Validation};

/// Largest encoded record (two installed models and a job with the longest names, a
/// report naming its rollback target and a full revocation list: see the test below).
pub const MAX_STATE_LEN: usize = 1280;
/// Format of the record this build writes (4: the frozen prefix, the product's trial).
/// Earlier formats are migrated when read; later ones are read by their prefix (see
/// `record.rs`).
pub const STATE_FORMAT: u8 = 4;

/// Text of at most `N` bytes kept inline (model names and versions, no allocation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Text<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> Text<N> {
    /// `s`, or `None` when it is longer than `N` bytes.
    pub fn new(s: &str) -> Option<Self> {
        let mut bytes = [0; N];
        bytes.get_mut(..s.len())?.copy_from_slice(s.as_bytes());
        Some(Self { len: u8::try_from(s.len()).ok()?, bytes })
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        self.bytes.get(..usize::from(self.len)).and_then(|b| core::str::from_utf8(b).ok()).unwrap_or("")
    }
}

impl<const N: usize> Default for Text<N> {
    fn default() -> Self {
        Self { len: 0, bytes: [0; N] }
    }
}

impl<const N: usize> core::fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A model sitting verified in a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Installed {
    /// SHA-256 of the image (checked when written and again at every boot).
    pub sha256: Digest,
    /// Image bytes.
    pub size: u32,
    /// Security counter it was released with.
    pub counter: u32,
    /// Model name.
    pub name: Text<64>,
    /// Version string.
    pub version: Text<32>,
    /// Tensor arena it needs.
    pub arena_bytes: u32,
    /// The signed manifest it came with (`None` for the factory model).
    pub manifest: Option<Digest>,
    /// The validation set stored after it in the same slot, if any.
    pub set: Option<SetRef>,
    /// Its accuracy on that set when it was committed.
    pub accuracy_permille: Option<u16>,
}

/// A validation set stored in a slot after the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetRef {
    /// SHA-256 of the set.
    pub sha256: Digest,
    /// Bytes.
    pub size: u32,
}

/// Where an update attempt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Erasing the inactive slot (a bounded piece per `poll`; started over after a reset).
    Erase,
    /// Receiving the image (full, or rebuilding it from a patch).
    Image,
    /// Receiving (or copying) the validation set.
    Set,
    /// Image and set verified; the validator runs.
    Validate,
}

/// An accepted offer on its way to a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job {
    /// SHA-256 of the signed manifest (the identity of the offer).
    pub manifest: Digest,
    /// The release key that signed it (a revocation of that key abandons the job).
    pub key: KeyId,
    /// The rollout it belongs to.
    pub rollout: u64,
    /// Its security counter.
    pub counter: u32,
    /// Model name.
    pub name: Text<64>,
    /// Version string.
    pub version: Text<32>,
    /// The image to end up with.
    pub image: Image,
    /// The patch, when the image is rebuilt from the active one.
    pub delta: Option<Delta>,
    /// The acceptance rule and its set.
    pub validation: Option<Validation>,
    /// Tensor arena it needs.
    pub arena_bytes: u32,
    /// What is being done.
    pub phase: Phase,
    /// Bytes of the current artifact to resume the download at.
    pub progress: u32,
    /// Bytes of the current artifact's destination already written.
    pub written: u32,
    /// The patch decoder's state at `progress` (deltas only).
    pub checkpoint: Option<[u8; mota_delta::Checkpoint::LEN]>,
    /// Boots that started validating this job.
    pub trials: u8,
    /// Times the slot was erased again after a torn write was found.
    pub restarts: u8,
}

/// The committed model on trial in the product: it stays until the product confirms it,
/// and is reverted at boot once it has started more boots than allowed without that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trial {
    /// The rollout that installed it (the `reverted` report goes there).
    pub rollout: u64,
    /// Boots since the commit that ran it unconfirmed.
    pub boots: u8,
}

/// A terminal report (kept until the next offer is accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Rollout.
    pub rollout: u64,
    /// Report number (idempotency key with `rollout`).
    pub seq: u32,
    /// Outcome.
    pub event: Event,
    /// The offer's manifest digest.
    pub manifest: Option<Digest>,
    /// New model's accuracy.
    pub accuracy_permille: Option<u16>,
    /// Running model's accuracy on the same set.
    pub previous_accuracy_permille: Option<u16>,
    /// New model's latency.
    pub latency_us: Option<u32>,
    /// Running model's latency.
    pub previous_latency_us: Option<u32>,
    /// Arena the new model used.
    pub arena_used: Option<u32>,
    /// Why it failed.
    pub error: Option<ErrorCode>,
    /// With a commit: the model left in the other slot, for the backend to name in a
    /// rollback.
    pub rollback_target: Option<Target>,
}

impl Report {
    /// A report with only the outcome and its reason.
    pub fn new(rollout: u64, seq: u32, event: Event, manifest: Option<Digest>, error: Option<ErrorCode>) -> Self {
        Self {
            rollout,
            seq,
            event,
            manifest,
            accuracy_permille: None,
            previous_accuracy_permille: None,
            latency_us: None,
            previous_latency_us: None,
            arena_used: None,
            error,
            rollback_target: None,
        }
    }

    /// The status message that carries it.
    pub fn status(&self) -> Status<'static> {
        Status {
            rollout_id: self.rollout,
            seq: self.seq,
            event: self.event,
            manifest: self.manifest,
            bytes_done: None,
            accuracy_permille: self.accuracy_permille,
            previous_accuracy_permille: self.previous_accuracy_permille,
            latency_us: self.latency_us,
            previous_latency_us: self.previous_latency_us,
            arena_used: self.arena_used,
            error: self.error,
            detail: None,
            rollback_target: self.rollback_target,
        }
    }
}

/// The release keys the newest verified revocation list names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Revoked {
    /// The list's sequence number (0: none held).
    pub seq: u32,
    len: u8,
    keys: [KeyId; MAX_REVOKED],
}

impl Revoked {
    /// An empty list numbered `seq`.
    pub fn new(seq: u32) -> Self {
        Self { seq, ..Self::default() }
    }

    /// The list `body` names (its signature verified by the caller).
    pub fn from_list(body: &RevocationBody<'_>) -> Self {
        let mut revoked = Self::new(body.seq);
        for key in body.keys() {
            revoked.push(key);
        }
        revoked
    }

    /// Adds a key id; ignored beyond [`MAX_REVOKED`] (a verified list holds no more).
    pub fn push(&mut self, key: KeyId) {
        if let Some(slot) = self.keys.get_mut(usize::from(self.len)) {
            *slot = key;
            self.len += 1;
        }
    }

    /// The revoked key ids.
    pub fn keys(&self) -> &[KeyId] {
        self.keys.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

/// The record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// The format the record was read in ([`STATE_FORMAT`] once this build stored it).
    pub format: u8,
    /// The slot the device runs from (0 or 1).
    pub active: u8,
    /// The device's security counter: the highest counter ever confirmed (committed, with
    /// no product trial). Never lowered, not even by a rollback or a revert.
    pub counter: u32,
    /// The model in the active slot.
    pub current: Option<Installed>,
    /// The model still intact in the other slot (what a rollback returns to).
    pub previous: Option<Installed>,
    /// The current model awaits the product's confirmation (the counter is raised then).
    pub trial: Option<Trial>,
    /// The update in progress.
    pub job: Option<Job>,
    /// The last terminal report: sent again after every boot and reconnect, retired when
    /// the next offer is accepted.
    pub report: Option<Report>,
    /// The next report number (device-wide, so `(rollout, seq)` never repeats).
    pub seq: u32,
    /// Digest of the last signed command executed: the same command delivered again is
    /// answered with its report, not judged again.
    pub last_cmd: Option<Digest>,
    /// The newest revocation list verified.
    pub revoked: Revoked,
    /// The manifest of the last attempt that ended without a commit (rejected or
    /// cancelled): a retained offer re-delivered after a reboot is not tried again.
    pub last_failed: Option<Digest>,
}

impl State {
    /// A device that has never stored a record.
    pub fn empty(counter: u32) -> Self {
        Self {
            format: STATE_FORMAT,
            active: 0,
            counter,
            current: None,
            previous: None,
            trial: None,
            job: None,
            report: None,
            seq: 1,
            last_cmd: None,
            revoked: Revoked::default(),
            last_failed: None,
        }
    }

    /// The slot that is not active.
    pub fn inactive(&self) -> u8 {
        1 - (self.active & 1)
    }

    /// Allocates a report number.
    pub fn next_seq(&mut self) -> u32 {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1).max(1);
        seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn full() -> Result<State, Box<dyn std::error::Error>> {
        let name = Text::new(&"n".repeat(64)).ok_or("name")?;
        let version = Text::new(&"v".repeat(32)).ok_or("version")?;
        let installed = Installed {
            sha256: Digest([0xAB; 32]),
            size: u32::MAX,
            counter: u32::MAX,
            name,
            version,
            arena_bytes: u32::MAX,
            manifest: Some(Digest([0xCD; 32])),
            set: Some(SetRef { sha256: Digest([0xEF; 32]), size: u32::MAX }),
            accuracy_permille: Some(1000),
        };
        let job = Job {
            manifest: Digest([1; 32]),
            key: KeyId([0xEE; 8]),
            rollout: u64::MAX,
            counter: u32::MAX,
            name,
            version,
            image: Image { size: u32::MAX, sha256: Digest([2; 32]) },
            delta: Some(Delta {
                base_sha256: Digest([3; 32]),
                patch_size: u32::MAX,
                patch_sha256: Digest([4; 32]),
                codec: u16::MAX,
            }),
            validation: Some(Validation {
                set_sha256: Digest([5; 32]),
                set_size: u32::MAX,
                min_accuracy_permille: 1000,
                max_drop_permille: 1000,
            }),
            arena_bytes: u32::MAX,
            phase: Phase::Validate,
            progress: u32::MAX,
            written: u32::MAX,
            checkpoint: Some([0xFF; mota_delta::Checkpoint::LEN]),
            trials: u8::MAX,
            restarts: u8::MAX,
        };
        let mut report = Report::new(u64::MAX, u32::MAX, Event::Rejected, Some(Digest([6; 32])), Some(ErrorCode(999)));
        report.accuracy_permille = Some(1000);
        report.previous_accuracy_permille = Some(1000);
        report.latency_us = Some(u32::MAX);
        report.previous_latency_us = Some(u32::MAX);
        report.arena_used = Some(u32::MAX);
        report.rollback_target = Some(Target { image: Digest([8; 32]), manifest: Some(Digest([9; 32])) });
        let mut revoked = Revoked::new(u32::MAX);
        for i in 0..MAX_REVOKED as u8 + 1 {
            revoked.push(KeyId([i; 8]));
        }
        assert_eq!(revoked.keys().len(), MAX_REVOKED);
        Ok(State {
            format: STATE_FORMAT,
            active: 1,
            counter: u32::MAX,
            current: Some(installed),
            previous: Some(installed),
            trial: Some(Trial { rollout: u64::MAX, boots: u8::MAX }),
            job: Some(job),
            report: Some(report),
            seq: u32::MAX,
            last_cmd: Some(Digest([10; 32])),
            revoked,
            last_failed: Some(Digest([7; 32])),
        })
    }

    #[test]
    fn the_largest_record_round_trips_within_its_bound() -> TestResult {
        let state = full()?;
        let mut buf = [0u8; MAX_STATE_LEN];
        let len = crate::record::encode(&state, &mut buf).ok_or("does not fit")?;
        assert!(len < MAX_STATE_LEN, "{len}");
        assert!(len > MAX_STATE_LEN - 256, "{len}: the bound wastes RAM");
        assert_eq!(crate::record::decode(&buf[..len]), Some(state));
        for cut in 0..len {
            assert_eq!(crate::record::decode(&buf[..cut]), None, "a record cut at {cut} decodes");
        }
        Ok(())
    }

    #[test]
    fn text_keeps_at_most_its_capacity() {
        assert_eq!(Text::<4>::new("abcd").map(|t| t.as_str().len()), Some(4));
        assert!(Text::<4>::new("abcde").is_none());
        assert_eq!(Text::<4>::default().as_str(), "");
    }

    #[test]
    fn slots_and_report_numbers() {
        let mut s = State::empty(3);
        assert_eq!((s.active, s.inactive()), (0, 1));
        s.active = 1;
        assert_eq!(s.inactive(), 0);
        assert_eq!(s.next_seq(), 1);
        assert_eq!(s.next_seq(), 2);
        s.seq = u32::MAX;
        assert_eq!(s.next_seq(), u32::MAX);
        assert_eq!(s.seq, 1, "report number 0 stays reserved for refusals");
    }
}
