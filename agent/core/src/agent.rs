//! The update state machine.
//!
//! Inputs are the events the firmware's loop sees: the boot itself ([`Agent::boot`]), a
//! message on one of the device's topics ([`Agent::handle`]), time passing
//! ([`Agent::poll`]) and a (re)connection ([`Agent::hello`]). Outputs are publications
//! through [`Transport`], chunk requests among them, and flash work on the regions the
//! agent owns. Nothing blocks on the network: a download advances one chunk per message.
//!
//! Every decision is one store of the [`State`] record; see `state.rs` for why that
//! makes each of them atomic, and `slot.rs` for how a download resumes.

use embedded_storage::nor_flash::NorFlash;
use mota_delta::{Checkpoint, Decoder, DeltaError};
use mota_proto::message::{Chunk, DeviceInfo, ErrorCode, Event, Hello, Refusal, RunningModel, Status};
use mota_proto::topic::Kind;
use mota_proto::{
    Action, CommandBody, Crypto, DevicePolicy, Digest, Envelope, Manifest, Target, VerifiedOffer, Wire,
    verify_command_with, verify_revocation_with, verify_with,
};

use crate::config::Config;
use crate::platform::{Clock, Located, Measurement, Run, Transport, Validator};
use crate::slot::{self, MAX_UNIT, WriteError, Writer};
use crate::state::{Installed, Job, Phase, Report, Revoked, SetRef, State, Text, Trial};
use crate::store::{StateStore, StoreError};

/// Torn writes in a row (each one a power cut during a write, found on resume) before an
/// update is given up as `flash_error`. A part that does not erase is caught at once by
/// the blank check after each erase; this bound only ends a device that loses power
/// during every download.
const MAX_RESTARTS: u8 = 16;

/// Messages a device subscribes to (on its own topics).
pub const SUBSCRIPTIONS: [Kind; 4] = [Kind::Offer, Kind::Chunk, Kind::Cmd, Kind::Trust];

/// Why the agent could not go on; the firmware reboots (or calls [`Agent::boot`] again,
/// with the arena [`Agent::shutdown`] gives back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentError {
    /// The configuration contradicts the flash (write unit too large, slots unequal,
    /// state region too small).
    Config(&'static str),
    /// The state region failed.
    Store(StoreError),
    /// A slot operation failed where no report could be made.
    Flash,
}

impl core::fmt::Display for AgentError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Config(why) => write!(f, "configuration: {why}"),
            Self::Store(e) => write!(f, "state region: {e}"),
            Self::Flash => f.write_str("slot flash operation failed"),
        }
    }
}

impl core::error::Error for AgentError {}

impl From<StoreError> for AgentError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// The model the device runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveModel {
    /// Where its bytes are (the firmware maps the slot and executes in place).
    pub image: Located,
    /// What it is.
    pub installed: Installed,
}

/// A validation in progress (RAM: a reset starts it again, as one more trial).
#[derive(Debug, Clone, Copy, Default)]
struct Validating {
    run: Run,
    /// The new model's measurement, once done; then the running model runs the set.
    new: Option<Measurement>,
}

/// An outstanding chunk request.
#[derive(Debug, Clone, Copy)]
struct Request {
    offset: u32,
    sent_ms: u64,
}

/// The agent: owns both slots, the state store and the validator.
pub struct Agent<'c, F, S, V> {
    config: &'c Config<'c>,
    slots: [F; 2],
    store: S,
    validator: V,
    state: State,
    /// The patch decoder. It holds the tensor arena as its block buffer (the arena is
    /// idle while a patch downloads) and lends it to the validator while a model runs.
    decoder: Decoder<&'c mut [u8]>,
    /// A patch is being applied.
    decoding: bool,
    writer: Writer,
    /// The inactive slot was erased and blank-checked in this boot: writes into it need
    /// not read back first (only a slot left by an earlier boot may hold torn units).
    slot_erased: bool,
    /// Where the erase of the inactive slot goes on (phase `Erase`).
    erase_at: u32,
    /// The validation in progress (phase `Validate`).
    validating: Validating,
    /// Next artifact offset to ask for (RAM; the persisted one is `job.progress`).
    received: u32,
    request: Option<Request>,
    /// Digest of the last envelope refused without a state change (so a retained offer is
    /// judged once per boot).
    refused: Option<Digest>,
    /// The same for the last refused command.
    refused_cmd: Option<Digest>,
    /// A pending report could not be published; try again at `poll`.
    report_due: bool,
}

impl<'c, F: NorFlash, S: StateStore, V: Validator> Agent<'c, F, S, V> {
    /// Starts the agent after a reset: loads (or creates) the record from `store` (a
    /// [`crate::MapStore`] or, on single-write parts, a [`crate::JournalStore`]), checks the
    /// active model's digest, counts a boot of a model on trial (reverting it when it has
    /// had its boots), and picks up whatever was interrupted. `arena` is the tensor arena
    /// (at least `config.limits.max_arena_bytes` and [`mota_delta::BLOCK_BUFFER`] bytes);
    /// the agent lends it to the validator, and to the patch decoder while it downloads.
    pub fn boot(
        config: &'c Config<'c>,
        slots: [F; 2],
        store: S,
        validator: V,
        arena: &'c mut [u8],
    ) -> Result<Self, AgentError> {
        Self::boot_or_return_arena(config, slots, store, validator, arena).map_err(|(e, _)| e)
    }

    /// [`Agent::boot`] for firmware or hosts that start the agent again without a reset
    /// (with [`Agent::shutdown`]): a boot that fails gives the tensor arena back with the
    /// error, so the next attempt can have it.
    pub fn boot_or_return_arena(
        config: &'c Config<'c>,
        slots: [F; 2],
        store: S,
        validator: V,
        arena: &'c mut [u8],
    ) -> Result<Self, (AgentError, &'c mut [u8])> {
        const SHORT: AgentError = AgentError::Config("arena smaller than the patch block buffer");
        if arena.len() < config.limits.max_arena_bytes as usize {
            return Err((AgentError::Config("arena smaller than max_arena_bytes"), arena));
        }
        if arena.len() < mota_delta::BLOCK_BUFFER {
            return Err((SHORT, arena));
        }
        if F::WRITE_SIZE > MAX_UNIT || !F::WRITE_SIZE.is_power_of_two() {
            return Err((AgentError::Config("slot write size must be a power of two up to 32"), arena));
        }
        if slots[0].capacity() != slots[1].capacity() {
            return Err((AgentError::Config("slots must have the same size"), arena));
        }
        // Cannot fail: the length was checked above.
        let Some(decoder) = Decoder::with_buffer([0; 32], 0, 0, arena) else { return Err((SHORT, &mut [])) };
        let mut agent = Self {
            config,
            slots,
            store,
            validator,
            state: State::empty(0),
            decoder,
            decoding: false,
            writer: Writer::new(0, 0, config.erased, false),
            slot_erased: false,
            erase_at: 0,
            validating: Validating::default(),
            received: 0,
            request: None,
            refused: None,
            refused_cmd: None,
            report_due: false,
        };
        match agent.start() {
            Ok(()) => Ok(agent),
            Err(e) => Err((e, agent.shutdown())),
        }
    }

    /// Stops the agent and gives its tensor arena back, for firmware or hosts that start
    /// the agent again without a reset ([`Agent::boot`] picks up from the record on
    /// flash, which is the truth; RAM may have been ahead of it).
    pub fn shutdown(self) -> &'c mut [u8] {
        self.decoder.into_buffer()
    }

    /// The boot after the checks: the record, the active model, its trial, the
    /// interrupted job.
    fn start(&mut self) -> Result<(), AgentError> {
        match self.store.load()? {
            // A record of another format is written again in this one at once, so a cut
            // later never meets a half-migrated region.
            Some(state) if state.format != crate::state::STATE_FORMAT => {
                self.state = State { format: crate::state::STATE_FORMAT, ..state };
                self.persist()?;
            }
            Some(state) => self.state = state,
            None => self.first_boot()?,
        }
        self.check_active()?;
        self.count_trial_boot()?;
        self.publish_active();
        self.report_due = self.state.report.is_some();
        if let Some(job) = self.state.job {
            self.resume(job)?;
        }
        Ok(())
    }

    /// The product is satisfied with the model on trial: it stays, and the device's
    /// counter rises to its counter (from now on nothing older is accepted). Nothing to do
    /// when no model is on trial.
    pub fn confirm(&mut self) -> Result<(), AgentError> {
        if self.state.trial.take().is_none() {
            return Ok(());
        }
        if let Some(current) = self.state.current {
            self.state.counter = self.state.counter.max(current.counter);
        }
        self.persist()
    }

    /// Whether the active model waits for [`Agent::confirm`].
    pub fn on_trial(&self) -> bool {
        self.state.trial.is_some()
    }

    /// A boot with a model on trial: counted; past `trial_boots`, the previous model is
    /// active again (one store, with the `reverted` report).
    fn count_trial_boot(&mut self) -> Result<(), AgentError> {
        let Some(trial) = self.state.trial else { return Ok(()) };
        let boots = trial.boots.saturating_add(1);
        if boots <= self.config.trial_boots {
            self.state.trial = Some(Trial { boots, ..trial });
            return self.persist();
        }
        let state = &mut self.state;
        state.trial = None;
        let failed = state.current.and_then(|c| c.manifest);
        state.last_failed = failed;
        let seq = state.next_seq();
        let previous = state.previous.take();
        let back = match previous {
            Some(previous) if self.holds(usize::from(self.state.inactive()), &previous)? => previous,
            // Nothing intact to go back to (it cannot be erased during a trial, but the
            // part may have lost it): the model stays, and the backend hears why.
            _ => {
                let code = Some(ErrorCode::ROLLBACK_UNAVAILABLE);
                return self.conclude(Report::new(trial.rollout, seq, Event::Rejected, failed, code));
            }
        };
        self.state.current = Some(back);
        self.state.active = self.state.inactive();
        let code = Some(ErrorCode::NOT_CONFIRMED);
        self.conclude(Report::new(trial.rollout, seq, Event::Reverted, failed, code))
    }

    /// The persistent record (for diagnostics and tests).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Nothing to do until a message arrives: no update in progress, no report to send
    /// (a model on trial waits for the product, not for the agent).
    pub fn is_idle(&self) -> bool {
        self.state.job.is_none() && !self.report_due
    }

    /// The model to run, if any.
    pub fn active_model(&self) -> Option<ActiveModel> {
        let installed = self.state.current?;
        Some(ActiveModel { image: Located { slot: self.state.active, offset: 0, len: installed.size }, installed })
    }

    /// The slots (for firmware that reads the model through the flash driver).
    pub fn slots(&mut self) -> &mut [F; 2] {
        &mut self.slots
    }

    /// Announces the device after a (re)connect; also delivers a pending report and
    /// asks again for the chunk in flight.
    pub fn hello<T: Transport>(&mut self, net: &mut T, clock: &impl Clock) -> Result<(), AgentError> {
        let running = self.state.current.as_ref().map(|m| RunningModel {
            model: m.name.as_str(),
            version: m.version.as_str(),
            sha256: m.sha256,
        });
        let info = DeviceInfo {
            device_class: self.config.device_class,
            agent_version: self.config.agent_version,
            running,
            security_counter: self.state.counter,
            slot_bytes: self.slot_bytes(),
            arena_bytes: self.config.limits.max_arena_bytes,
            codecs: 1 << mota_delta::format::CODEC,
            max_chunk: self.config.chunk_bytes,
            next_seq: Some(self.state.seq),
            revocation_seq: Some(self.state.revoked.seq),
        };
        publish(net, Kind::Hello, &Hello::online(info));
        self.report_due |= self.state.report.is_some();
        self.request = None;
        self.poll(net, clock)
    }

    /// Time passes: delivers a pending report, (re)sends the chunk request, erases the
    /// next piece of the inactive slot, copies a validation set the device already has,
    /// runs the next records of a validation (pieces bounded by [`crate::Work`]).
    pub fn poll<T: Transport>(&mut self, net: &mut T, clock: &impl Clock) -> Result<(), AgentError> {
        if let Some(job) = self.state.job {
            match job.phase {
                Phase::Erase => self.erase_step(job, net, clock)?,
                Phase::Validate => self.validate(job)?,
                Phase::Set if self.reusable_set(&job).is_some() => self.copy_set(job, net, clock)?,
                Phase::Image | Phase::Set => {
                    let now = clock.now_ms();
                    if self.request.is_none_or(|r| now.saturating_sub(r.sent_ms) >= self.config.retry_ms) {
                        self.send_request(&job, net, now);
                    }
                }
            }
        }
        if self.report_due {
            self.deliver_report(net);
        }
        Ok(())
    }

    /// A message arrived on one of the device's topics.
    pub fn handle<T: Transport>(
        &mut self,
        kind: Kind,
        payload: &[u8],
        net: &mut T,
        clock: &impl Clock,
    ) -> Result<(), AgentError> {
        match kind {
            Kind::Offer => self.on_offer(payload, net, clock),
            Kind::Chunk => self.on_chunk(payload, net, clock),
            Kind::Cmd => self.on_cmd(payload, net, clock),
            Kind::Trust => self.on_trust(payload),
            // Device-to-backend kinds are not for the device.
            Kind::Hello | Kind::Get | Kind::Status => Ok(()),
        }
    }

    fn slot_bytes(&self) -> u32 {
        u32::try_from(self.slots[0].capacity()).unwrap_or(u32::MAX)
    }

    fn first_boot(&mut self) -> Result<(), AgentError> {
        let mut state = State::empty(0);
        if let Some(f) = self.config.factory {
            let sha256 =
                slot::sha256(self.config.crypto, &mut self.slots[0], 0, f.size).map_err(|_| AgentError::Flash)?;
            state.counter = f.counter;
            state.current = Some(Installed {
                sha256,
                size: f.size,
                counter: f.counter,
                name: Text::new(f.name).ok_or(AgentError::Config("factory name too long"))?,
                version: Text::new(f.version).ok_or(AgentError::Config("factory version too long"))?,
                arena_bytes: f.arena_bytes,
                manifest: None,
                set: None,
                accuracy_permille: None,
            });
        }
        self.store.save(&state)?;
        self.state = state;
        Ok(())
    }

    /// The active slot must still hold the model the record names; if not (flash decay,
    /// tampering, a slot that cannot be read), fall back to the other slot's verified
    /// model, or run nothing.
    fn check_active(&mut self) -> Result<(), AgentError> {
        let Some(current) = self.state.current else { return Ok(()) };
        let active = usize::from(self.state.active & 1);
        if self.holds(active, &current)? {
            return Ok(());
        }
        let other = usize::from(self.state.inactive());
        let previous = self.state.previous.filter(|_| self.state.job.is_none());
        match previous {
            Some(previous) if self.holds(other, &previous)? => {
                self.state.active = self.state.inactive();
                self.state.current = Some(previous);
            }
            _ => self.state.current = None,
        }
        self.state.previous = None;
        self.state.trial = None;
        self.persist()
    }

    /// Whether `slot` still holds `model`. A slot that cannot be read (an ECC part's
    /// uncorrectable error) holds nothing the agent can vouch for: the same answer as a
    /// wrong digest, so a boot falls back instead of failing on every reset.
    fn holds(&mut self, slot: usize, model: &Installed) -> Result<bool, AgentError> {
        let flash = self.slots.get_mut(slot).ok_or(AgentError::Flash)?;
        Ok(slot::sha256(self.config.crypto, flash, 0, model.size).is_ok_and(|d| d == model.sha256))
    }

    /// Stores the record as it now is in RAM, then tells the product's leases which slot
    /// is active. After an error the two may differ: the caller must reboot (build the
    /// agent again), as after any [`AgentError`].
    fn persist(&mut self) -> Result<(), AgentError> {
        self.store.save(&self.state)?;
        self.publish_active();
        Ok(())
    }

    /// Tells the product's leases which slot holds the model to run.
    fn publish_active(&self) {
        if let Some(leases) = self.config.leases {
            leases.publish(self.state.current.map(|_| self.state.active));
        }
    }

    // ---- offers ----------------------------------------------------------------------

    fn on_offer<T: Transport>(&mut self, payload: &[u8], net: &mut T, clock: &impl Clock) -> Result<(), AgentError> {
        // An empty retained message clears the offer.
        let Ok(envelope) = Envelope::parse(payload) else {
            return self.refuse(payload, None, ErrorCode::ENVELOPE_MALFORMED, true, net);
        };
        let digest = sha256(self.config.crypto, envelope.body);
        // The offer in progress, one installed now or before, or one that failed. (Same
        // signed manifest: its signature verified before, whatever wraps it now.)
        if self.state.job.is_some_and(|j| j.manifest == digest) {
            return Ok(());
        }
        if self.state.current.and_then(|m| m.manifest) == Some(digest)
            || self.state.previous.and_then(|m| m.manifest) == Some(digest)
            || self.state.last_failed == Some(digest)
        {
            // Offered again what this device already finished: the backend has not heard
            // how it ended (a broker that restarted drops what no backend was connected
            // to take), so the held terminal report goes out again; it is counted once,
            // by its key.
            self.deliver_report(net);
            return Ok(());
        }
        // The very same bytes refused before (by the whole envelope: a copy with a broken
        // signature must not shadow the genuine offer).
        let whole = sha256(self.config.crypto, payload);
        if self.refused == Some(whole) {
            return Ok(());
        }
        let policy = DevicePolicy {
            device_class: self.config.device_class,
            security_counter: self.state.counter,
            now: clock.unix_time(),
            revoked: self.state.revoked.keys(),
            limits: mota_proto::Limits { max_image_bytes: self.slot_bytes(), ..self.config.limits },
        };
        let offer = match verify_with(self.config.crypto, payload, self.config.roots, &policy) {
            Ok(offer) => offer,
            Err(e) => return self.refuse(payload, Some(digest), ErrorCode::from(&e), true, net),
        };
        if self.state.job.is_some() || self.report_due || self.state.trial.is_some() {
            // Not remembered: once the device is free, the offer is judged again.
            return self.refuse(payload, Some(digest), ErrorCode::BUSY, false, net);
        }
        if let Err(code) = self.check_fits(&offer) {
            return self.refuse(payload, Some(digest), code, true, net);
        }
        self.accept(&offer, net, clock)
    }

    /// What `verify` cannot know: the slot layout, the codec and the running model.
    fn check_fits(&self, offer: &VerifiedOffer<'_>) -> Result<(), ErrorCode> {
        let m: &Manifest<'_> = &offer.manifest;
        let set_end = match m.validation {
            Some(v) => slot::set_offset(m.image.size).and_then(|o| o.checked_add(v.set_size)),
            None => Some(m.image.size),
        };
        if set_end.is_none_or(|end| end > self.slot_bytes()) {
            return Err(ErrorCode::IMAGE_TOO_LARGE);
        }
        if let Some(d) = m.delta {
            if d.codec != u16::from(mota_delta::format::CODEC) {
                return Err(ErrorCode::UNSUPPORTED_CODEC);
            }
            if self.state.current.is_none_or(|c| c.sha256 != d.base_sha256) {
                return Err(ErrorCode::BASE_MISMATCH);
            }
        }
        if Text::<64>::new(m.model).is_none() || Text::<32>::new(m.version).is_none() {
            return Err(ErrorCode::MANIFEST_MALFORMED);
        }
        Ok(())
    }

    /// Reports a refused offer without touching flash: the record is unchanged, so a
    /// retained offer re-delivered after a reboot is judged (and reported) the same way,
    /// under the same key (rollout 0, seq 0, the manifest digest). `remember`: ignore these
    /// exact bytes from now on (until a reboot).
    fn refuse<T: Transport>(
        &mut self,
        payload: &[u8],
        digest: Option<Digest>,
        code: ErrorCode,
        remember: bool,
        net: &mut T,
    ) -> Result<(), AgentError> {
        if payload.is_empty() {
            return Ok(());
        }
        if remember {
            self.refused = Some(sha256(self.config.crypto, payload));
        }
        publish_refusal(net, digest, code);
        Ok(())
    }

    fn accept<T: Transport>(
        &mut self,
        offer: &VerifiedOffer<'_>,
        net: &mut T,
        clock: &impl Clock,
    ) -> Result<(), AgentError> {
        let m = &offer.manifest;
        let job = Job {
            manifest: offer.manifest_digest,
            key: offer.key_id,
            rollout: m.rollout_id,
            counter: m.security_counter,
            name: Text::new(m.model).unwrap_or_default(),
            version: Text::new(m.version).unwrap_or_default(),
            image: m.image,
            delta: m.delta,
            validation: m.validation,
            arena_bytes: m.arena_bytes,
            phase: Phase::Erase,
            progress: 0,
            written: 0,
            checkpoint: None,
            trials: 0,
            restarts: 0,
        };
        // The inactive slot is about to be erased: it no longer holds a rollback target.
        // The last report was sent (else the offer is refused as busy): it retires here.
        self.state.previous = None;
        self.state.report = None;
        self.state.job = Some(job);
        let seq = self.state.next_seq();
        self.persist()?;
        let mut accepted = progress_status(&job, seq, Event::Accepted, 0);
        if !offer.time_checked {
            accepted.detail = Some("expiry not checked: no trusted time");
        }
        publish(net, Kind::Status, &accepted);
        self.erase_at = 0;
        self.erase_step(job, net, clock)
    }

    /// Erases the next piece of the inactive slot (at most [`crate::Work::flash_bytes`],
    /// whole sectors) and blank-checks it; once the whole slot reads erased, the download
    /// starts. Waits while the product holds a lease on the slot (its model before a
    /// switch); a part that does not erase ends the job as `flash_error`.
    fn erase_step<T: Transport>(&mut self, mut job: Job, net: &mut T, clock: &impl Clock) -> Result<(), AgentError> {
        let inactive = self.state.inactive();
        if self.config.leases.is_some_and(|l| l.held(inactive)) {
            return Ok(());
        }
        let slot = &mut self.slots[usize::from(inactive)];
        let end = u32::try_from(slot.capacity()).map_err(|_| AgentError::Flash)?;
        let budget = match self.config.work.flash_bytes {
            0 => end,
            n => n,
        };
        match slot::erase_piece(slot, self.erase_at, budget, end, self.config.erased) {
            Ok(Some(next)) => self.erase_at = next,
            Ok(None) => return self.finish(job, Err(ErrorCode::FLASH_ERROR), None),
            Err(_) => return Err(AgentError::Flash),
        }
        if self.erase_at < end {
            return Ok(());
        }
        job.phase = Phase::Image;
        self.state.job = Some(job);
        self.persist()?;
        self.slot_erased = true;
        self.start_artifact(job);
        self.send_request(&job, net, clock.now_ms());
        Ok(())
    }

    // ---- transfer --------------------------------------------------------------------

    /// The artifact of the current phase: (id, size, destination offset in the slot).
    fn artifact(job: &Job) -> (Digest, u32, u32) {
        match (job.phase, job.delta, job.validation) {
            (Phase::Image, Some(d), _) => (d.patch_sha256, d.patch_size, 0),
            (Phase::Set, _, Some(v)) => (v.set_sha256, v.set_size, slot::set_offset(job.image.size).unwrap_or(0)),
            _ => (job.image.sha256, job.image.size, 0),
        }
    }

    /// Sets up the writer (and decoder) for the job's phase at its persisted progress.
    fn start_artifact(&mut self, job: Job) {
        let (_, size, dest) = Self::artifact(&job);
        let limit = if job.phase == Phase::Image { job.image.size } else { dest.saturating_add(size) };
        self.writer = Writer::new(dest.saturating_add(job.written), limit, self.config.erased, self.slot_erased);
        self.received = job.progress;
        self.request = None;
        let base = self.state.current.map_or(0, |c| c.size);
        self.decoding = match (job.phase, job.delta, job.checkpoint) {
            (Phase::Image, Some(d), None) => {
                self.decoder.restart(d.base_sha256.0, base, job.image.size);
                true
            }
            (Phase::Image, Some(_), Some(ck)) => {
                self.decoder.restart_at(Checkpoint::from_bytes(&ck), base, job.image.size).is_ok()
            }
            _ => false,
        };
    }

    fn resume(&mut self, mut job: Job) -> Result<(), AgentError> {
        if job.phase == Phase::Erase {
            self.erase_at = 0; // erasing again what was erased costs time, not safety
            return Ok(());
        }
        if job.phase == Phase::Validate {
            // This boot starts another validation run: count it first, so a model that
            // resets the device is given up after `max_trials` boots.
            job.trials = job.trials.saturating_add(1);
            if job.trials > self.config.max_trials {
                return self.finish(job, Err(ErrorCode::VALIDATION_INTERRUPTED), None);
            }
            self.state.job = Some(job);
            return self.persist();
        }
        self.start_artifact(job);
        if job.phase == Phase::Image && job.delta.is_some() && !self.decoding {
            return self.finish(job, Err(ErrorCode::PATCH_CORRUPT), None);
        }
        Ok(())
    }

    fn send_request<T: Transport>(&mut self, job: &Job, net: &mut T, now: u64) {
        let (artifact, size, _) = Self::artifact(job);
        let length = (size - self.received.min(size)).min(self.config.chunk_bytes);
        if length == 0 {
            return;
        }
        let get = mota_proto::message::Get { artifact, offset: self.received, length };
        publish(net, Kind::Get, &get);
        self.request = Some(Request { offset: self.received, sent_ms: now });
    }

    fn on_chunk<T: Transport>(&mut self, payload: &[u8], net: &mut T, clock: &impl Clock) -> Result<(), AgentError> {
        let Some(job) = self.state.job else { return Ok(()) };
        if matches!(job.phase, Phase::Validate | Phase::Erase) {
            return Ok(());
        }
        let Ok(chunk) = Chunk::parse(payload) else { return Ok(()) };
        let (artifact, size, _) = Self::artifact(&job);
        // Only the answer to the request in flight counts; duplicates, stale, reordered,
        // oversized and foreign chunks are dropped (the request is repeated on timeout).
        let Some(request) = self.request else { return Ok(()) };
        if chunk.artifact != artifact || chunk.offset != request.offset || chunk.offset != self.received {
            return Ok(());
        }
        if let Some(refusal) = chunk.refusal {
            if refusal == Refusal::RATE_LIMITED || refusal == Refusal::UNAVAILABLE {
                return Ok(()); // the timer asks again
            }
            return self.finish(job, Err(ErrorCode::TRANSFER_FAILED), None);
        }
        let Some(data) = chunk.data else { return Ok(()) };
        let asked = (size - self.received).min(self.config.chunk_bytes);
        if data.is_empty() || data.len() as u64 > u64::from(asked) {
            return Ok(());
        }
        self.request = None;
        self.received += data.len() as u32;
        let written = match self.consume(&job, data) {
            Ok(()) => Ok(()),
            Err(Consumed::Torn) => return self.restart(job, net, clock),
            Err(Consumed::Reject(code)) => Err(code),
            Err(Consumed::Flash) => Err(ErrorCode::FLASH_ERROR),
        };
        if let Err(code) = written {
            return self.finish(job, Err(code), None);
        }
        if self.received == size {
            self.artifact_done(job, net, clock)
        } else {
            self.persist_progress(job, net)?;
            self.send_request(&job, net, clock.now_ms());
            Ok(())
        }
    }

    /// Writes received bytes, directly or through the patch decoder.
    fn consume(&mut self, job: &Job, data: &[u8]) -> Result<(), Consumed> {
        let [a, b] = &mut self.slots;
        let (active, inactive) = if self.state.active == 0 { (a, b) } else { (b, a) };
        if !(self.decoding && job.phase == Phase::Image) {
            return self.writer.write(inactive, data).map_err(Consumed::from);
        }
        let mut sink = slot::Sink { flash: inactive, writer: &mut self.writer, error: None };
        match self.decoder.push(data, &mut slot::Base(active), &mut sink) {
            Ok(_) => Ok(()),
            Err(DeltaError::Sink) => Err(sink.error.map_or(Consumed::Flash, Consumed::from)),
            Err(DeltaError::WrongBase | DeltaError::BaseTooSmall) => Err(Consumed::Reject(ErrorCode::BASE_MISMATCH)),
            Err(DeltaError::Base) => Err(Consumed::Flash),
            Err(_) => Err(Consumed::Reject(ErrorCode::PATCH_CORRUPT)),
        }
    }

    /// Persists progress once a resumable point moved by at least 4 KiB (every patch
    /// block is one), and reports it.
    fn persist_progress<T: Transport>(&mut self, mut job: Job, net: &mut T) -> Result<(), AgentError> {
        let (progress, written, checkpoint) = match (self.decoding.then_some(&self.decoder), job.phase) {
            // A checkpoint is resumable only once its output is all programmed (a block
            // that ends inside a write unit leaves bytes held back in the writer).
            (Some(d), Phase::Image) => match d.checkpoint() {
                Some(ck) if self.writer.flushed() == ck.output && self.writer.position() == ck.output => {
                    (ck.patch_offset, ck.output, Some(ck.to_bytes()))
                }
                _ => return Ok(()),
            },
            _ => {
                let (_, _, dest) = Self::artifact(&job);
                let flushed = self.writer.flushed() - dest;
                (flushed, flushed, None)
            }
        };
        if written < job.written.saturating_add(4096) && progress < job.progress.saturating_add(4096) {
            return Ok(());
        }
        job.progress = progress;
        job.written = written;
        job.checkpoint = checkpoint;
        self.state.job = Some(job);
        let seq = self.state.next_seq();
        self.persist()?;
        publish(net, Kind::Status, &progress_status(&job, seq, Event::Downloading, self.received));
        Ok(())
    }

    /// A torn write was found after a power cut: erase the slot and download again.
    fn restart<T: Transport>(&mut self, mut job: Job, net: &mut T, clock: &impl Clock) -> Result<(), AgentError> {
        job.restarts = job.restarts.saturating_add(1);
        if job.restarts > MAX_RESTARTS {
            return self.finish(job, Err(ErrorCode::FLASH_ERROR), None);
        }
        job.phase = Phase::Erase;
        job.progress = 0;
        job.written = 0;
        job.checkpoint = None;
        // The erase phase is stored before the erase starts: a cut then erases again,
        // never finds progress P over an erased slot (only the final digest would).
        self.state.job = Some(job);
        self.persist()?;
        self.decoding = false;
        self.erase_at = 0;
        self.erase_step(job, net, clock)
    }

    fn artifact_done<T: Transport>(&mut self, mut job: Job, net: &mut T, clock: &impl Clock) -> Result<(), AgentError> {
        let inactive = usize::from(self.state.inactive());
        let flushed = self.writer.flush(&mut self.slots[inactive]);
        if flushed == Err(WriteError::Torn) {
            return self.restart(job, net, clock);
        }
        if flushed.is_err() {
            return self.finish(job, Err(ErrorCode::FLASH_ERROR), None);
        }
        let check = match job.phase {
            Phase::Image => {
                if self.decoding && self.decoder.finish().is_err() {
                    return self.finish(job, Err(ErrorCode::PATCH_CORRUPT), None);
                }
                self.decoding = false;
                (0, job.image.size, job.image.sha256, ErrorCode::IMAGE_DIGEST_MISMATCH)
            }
            _ => {
                let (artifact, size, dest) = Self::artifact(&job);
                (dest, size, artifact, ErrorCode::VALIDATION_SET_INVALID)
            }
        };
        match slot::sha256(self.config.crypto, &mut self.slots[inactive], check.0, check.1) {
            Ok(d) if d == check.2 => {}
            Ok(_) => return self.finish(job, Err(check.3), None),
            Err(_) => return self.finish(job, Err(ErrorCode::FLASH_ERROR), None),
        }
        let verified = job.phase == Phase::Image;
        job.phase = if verified && job.validation.is_some() { Phase::Set } else { Phase::Validate };
        job.progress = 0;
        job.written = 0;
        job.checkpoint = None;
        if job.phase == Phase::Validate {
            job.trials = 1;
            self.validating = Validating::default();
        }
        self.state.job = Some(job);
        let seq = self.state.next_seq();
        self.persist()?;
        if verified {
            publish(net, Kind::Status, &progress_status(&job, seq, Event::Verified, job.image.size));
        }
        self.start_artifact(job);
        // Downloading the set starts at once; copying it and validating wait for the next
        // `poll` (short call chains keep the stack small).
        if job.phase == Phase::Set && self.reusable_set(&job).is_none() {
            self.send_request(&job, net, clock.now_ms());
        }
        Ok(())
    }

    /// The running model's slot already holds the set the offer names.
    fn reusable_set(&self, job: &Job) -> Option<(u32, u32)> {
        let v = job.validation?;
        let current = self.state.current?;
        let set = current.set.filter(|s| s.sha256 == v.set_sha256 && s.size == v.set_size)?;
        Some((slot::set_offset(current.size)?, set.size))
    }

    /// Copies the next piece of the set the running model's slot already holds (at most
    /// [`crate::Work::flash_bytes`] per call), through the writer `start_artifact` set up.
    fn copy_set<T: Transport>(&mut self, job: Job, net: &mut T, clock: &impl Clock) -> Result<(), AgentError> {
        let Some((from, len)) = self.reusable_set(&job) else { return Ok(()) };
        let [a, b] = &mut self.slots;
        let (active, inactive) = if self.state.active == 0 { (a, b) } else { (b, a) };
        let done = self.received.min(len);
        let piece = match self.config.work.flash_bytes {
            0 => len - done,
            n => n.min(len - done),
        };
        match slot::copy(active, from.saturating_add(done), piece, inactive, &mut self.writer) {
            Ok(()) => {}
            Err(WriteError::Torn) => return self.restart(job, net, clock),
            Err(_) => return self.finish(job, Err(ErrorCode::FLASH_ERROR), None),
        }
        self.received = done + piece;
        if self.received < len {
            return Ok(());
        }
        self.artifact_done(job, net, clock)
    }

    // ---- validation and the decision -------------------------------------------------

    /// Runs the next piece of the validation: the new model on the set, then the running
    /// model on the same set (for the "no worse than now"), then the decision.
    fn validate(&mut self, job: Job) -> Result<(), AgentError> {
        let new_slot = self.state.inactive();
        let set = job.validation.map(|v| Located {
            slot: new_slot,
            offset: slot::set_offset(job.image.size).unwrap_or(0),
            len: v.set_size,
        });
        let budget = self.config.work.records;
        self.decoding = false;
        let arena = self.decoder.lend_buffer();
        loop {
            let v = &mut self.validating;
            let Some(measured) = v.new else {
                let model = Located { slot: new_slot, offset: 0, len: job.image.size };
                match self.validator.validate(model, job.arena_bytes, set, arena, &mut v.run, budget) {
                    Ok(Some(m)) => *v = Validating { run: Run::default(), new: Some(m) },
                    Ok(None) => return Ok(()),
                    Err(code) => return self.finish(job, Err(code), None),
                }
                if budget == 0 {
                    continue;
                }
                return Ok(());
            };
            // The running model on the same set; if it cannot run, there is nothing to
            // compare with.
            let previous = match (self.state.current, set) {
                (Some(c), Some(_)) => {
                    let model = Located { slot: self.state.active, offset: 0, len: c.size };
                    match self.validator.validate(model, c.arena_bytes, set, arena, &mut v.run, budget) {
                        Ok(None) => return Ok(()),
                        done => done.ok().flatten(),
                    }
                }
                _ => None,
            };
            return self.decide(job, measured, previous);
        }
    }

    /// The acceptance rule over both measurements, then the decision.
    fn decide(&mut self, job: Job, measured: Measurement, previous: Option<Measurement>) -> Result<(), AgentError> {
        let mut report = Report::new(job.rollout, 0, Event::Committed, Some(job.manifest), None);
        report.accuracy_permille = measured.accuracy_permille;
        report.latency_us = measured.latency_us;
        report.arena_used = measured.arena_used;
        report.previous_accuracy_permille = previous.and_then(|p| p.accuracy_permille);
        report.previous_latency_us = previous.and_then(|p| p.latency_us);
        let verdict = match (job.validation, measured.accuracy_permille) {
            (Some(rule), Some(acc)) if acc < rule.min_accuracy_permille => Err(ErrorCode::ACCURACY_BELOW_MINIMUM),
            (Some(rule), Some(acc))
                if report
                    .previous_accuracy_permille
                    .is_some_and(|prev| u32::from(acc) + u32::from(rule.max_drop_permille) < u32::from(prev)) =>
            {
                Err(ErrorCode::ACCURACY_DROP)
            }
            (Some(_), None) => Err(ErrorCode::VALIDATION_SET_INVALID),
            _ => Ok(()),
        };
        self.finish(job, verdict, Some(report))
    }

    /// Ends the job: ONE store either commits (new slot active, counter raised, report
    /// pending) or rejects (active slot untouched, report pending). Then reports.
    fn finish(&mut self, job: Job, verdict: Result<(), ErrorCode>, measured: Option<Report>) -> Result<(), AgentError> {
        self.state.job = None;
        let seq = self.state.next_seq();
        let mut report =
            measured.unwrap_or_else(|| Report::new(job.rollout, seq, Event::Rejected, Some(job.manifest), None));
        report.seq = seq;
        match verdict {
            Ok(()) => {
                report.event = Event::Committed;
                report.error = None;
                self.state.previous = self.state.current;
                self.state.active = self.state.inactive();
                // With a trial in the product the counter rises at its confirmation, so a
                // revert never lands below it.
                if self.config.trial_boots == 0 {
                    self.state.counter = self.state.counter.max(job.counter);
                } else {
                    self.state.trial = Some(Trial { rollout: job.rollout, boots: 0 });
                }
                self.state.current = Some(Installed {
                    sha256: job.image.sha256,
                    size: job.image.size,
                    counter: job.counter,
                    name: job.name,
                    version: job.version,
                    arena_bytes: job.arena_bytes,
                    manifest: Some(job.manifest),
                    set: job.validation.map(|v| SetRef { sha256: v.set_sha256, size: v.set_size }),
                    accuracy_permille: report.accuracy_permille,
                });
                report.rollback_target = self.state.previous.map(|p| Target { image: p.sha256, manifest: p.manifest });
            }
            Err(code) => {
                report.event = Event::Rejected;
                report.error = Some(code);
                self.state.last_failed = Some(job.manifest);
            }
        }
        self.conclude(report)
    }

    /// Ends what was in flight with `report` as the terminal report: one store of the
    /// record (which the caller changed in RAM), then the report is due.
    fn conclude(&mut self, report: Report) -> Result<(), AgentError> {
        self.state.report = Some(report);
        self.decoding = false;
        self.request = None;
        self.slot_erased = false;
        self.persist()?;
        self.report_due = true;
        Ok(())
    }

    /// Publishes the terminal report. It stays in the record: a publish may be lost with
    /// the power before the broker has it, so it is sent again after every boot and
    /// reconnect (the backend counts it once, by its key) and retired only by the store
    /// that accepts the next offer (or replaced by the next report).
    fn deliver_report<T: Transport>(&mut self, net: &mut T) {
        match self.state.report {
            Some(report) => self.report_due = !publish(net, Kind::Status, &report.status()),
            None => self.report_due = false,
        }
    }

    // ---- commands and trust -----------------------------------------------------------

    /// A signed command. It acts only if it verifies (key chain, revocations, this
    /// device) and applies to the state it names; anything else is refused with its
    /// reason and no flash operation. Refusals of a verified command name its subject, so
    /// the backend files them under the rollout; those of an unverified one name nothing.
    fn on_cmd<T: Transport>(&mut self, payload: &[u8], net: &mut T, clock: &impl Clock) -> Result<(), AgentError> {
        // An empty retained message clears the command; the same refused bytes are
        // judged once per boot.
        if payload.is_empty() || self.refused_cmd == Some(sha256(self.config.crypto, payload)) {
            return Ok(());
        }
        let (roots, device) = (self.config.roots, self.config.device_id);
        let revoked = self.state.revoked.keys();
        let verified = match verify_command_with(self.config.crypto, payload, roots, revoked, clock.unix_time(), device)
        {
            Ok(verified) => verified,
            Err(e) => return self.refuse_cmd(payload, None, ErrorCode::from(&e), net),
        };
        if self.state.last_cmd == Some(verified.digest) {
            // Carried out before (a retained command after a reconnect): its report again.
            self.deliver_report(net);
            return Ok(());
        }
        let cmd = verified.command;
        let subject = Some(cmd.subject);
        let report = match cmd.action {
            Action::Cancel => match self.state.job {
                Some(job) if job.manifest == cmd.subject && job.rollout == cmd.rollout_id => self.cancel(&cmd, job),
                _ => return self.refuse_cmd(payload, None, ErrorCode::COMMAND_STALE, net),
            },
            Action::Rollback => {
                if self.state.job.is_some() {
                    // Not remembered: once the job ends, the retained command is judged again.
                    publish_refusal(net, None, ErrorCode::BUSY);
                    return Ok(());
                }
                if self.state.current.and_then(|c| c.manifest) != subject {
                    return self.refuse_cmd(payload, None, ErrorCode::COMMAND_STALE, net);
                }
                match self.rollback_to(&cmd)? {
                    Ok(previous) => self.roll_back(&cmd, previous),
                    Err(code) => return self.refuse_cmd(payload, subject, code, net),
                }
            }
        };
        // Only now does anything change: one store holds the new state, the report and
        // the command's digest.
        if self.report_due {
            self.deliver_report(net);
        }
        if self.report_due {
            return Ok(()); // not recorded: the retained command comes again
        }
        self.state.last_cmd = Some(verified.digest);
        self.conclude(report)?;
        self.deliver_report(net);
        Ok(())
    }

    /// The model a rollback may return to: exactly the named one, not below the
    /// device's counter, still intact in the other slot.
    fn rollback_to(&mut self, cmd: &CommandBody<'_>) -> Result<Result<Installed, ErrorCode>, AgentError> {
        let (Some(previous), Some(target)) = (self.state.previous, cmd.target) else {
            return Ok(Err(ErrorCode::ROLLBACK_UNAVAILABLE));
        };
        if previous.sha256 != target.image || previous.manifest != target.manifest {
            return Ok(Err(ErrorCode::ROLLBACK_TARGET_MISMATCH));
        }
        if previous.counter < self.state.counter {
            return Ok(Err(ErrorCode::ROLLBACK_BELOW_COUNTER));
        }
        if !self.holds(usize::from(self.state.inactive()), &previous)? {
            return Ok(Err(ErrorCode::ROLLBACK_UNAVAILABLE));
        }
        Ok(Ok(previous))
    }

    /// Abandons `job` (RAM only; the caller stores).
    fn cancel(&mut self, cmd: &CommandBody<'_>, job: Job) -> Report {
        let state = &mut self.state;
        state.job = None;
        state.last_failed = Some(job.manifest);
        let seq = state.next_seq();
        Report::new(cmd.rollout_id, seq, Event::Cancelled, Some(job.manifest), Some(ErrorCode::CANCELLED))
    }

    /// Makes `previous` active again (RAM only; the caller stores). The counter stays.
    fn roll_back(&mut self, cmd: &CommandBody<'_>, previous: Installed) -> Report {
        let state = &mut self.state;
        state.trial = None;
        state.previous = state.current;
        state.current = Some(previous);
        state.active = state.inactive();
        let seq = state.next_seq();
        Report::new(cmd.rollout_id, seq, Event::RolledBack, previous.manifest, None)
    }

    /// Reports a refused command without touching flash, like a refused offer (under
    /// rollout 0, seq 0), and ignores these bytes until the next boot.
    fn refuse_cmd<T: Transport>(
        &mut self,
        payload: &[u8],
        subject: Option<Digest>,
        code: ErrorCode,
        net: &mut T,
    ) -> Result<(), AgentError> {
        self.refused_cmd = Some(sha256(self.config.crypto, payload));
        publish_refusal(net, subject, code);
        Ok(())
    }

    /// A root-signed revocation list: kept when it verifies and is newer than the one
    /// held; from then on offers and commands by its keys are refused, and a job one of
    /// them signed is abandoned (`key_revoked`) in the same store.
    fn on_trust(&mut self, payload: &[u8]) -> Result<(), AgentError> {
        let Ok(list) = verify_revocation_with(self.config.crypto, payload, self.config.roots) else { return Ok(()) };
        if list.seq <= self.state.revoked.seq {
            return Ok(());
        }
        self.state.revoked = Revoked::from_list(&list);
        match self.state.job.filter(|job| self.state.revoked.keys().contains(&job.key)) {
            Some(job) => self.finish(job, Err(ErrorCode::KEY_REVOKED), None),
            None => self.persist(),
        }
    }
}

/// Why received bytes could not be written.
enum Consumed {
    Torn,
    Flash,
    Reject(ErrorCode),
}

impl From<WriteError> for Consumed {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Torn => Self::Torn,
            WriteError::Flash => Self::Flash,
            WriteError::Overflow => Self::Reject(ErrorCode::IMAGE_TOO_LARGE),
        }
    }
}

/// SHA-256 of `bytes` through the platform's crypto.
fn sha256(crypto: &dyn Crypto, bytes: &[u8]) -> Digest {
    crypto.sha256(&mut |feed| feed(bytes))
}

/// Encodes and publishes; `false` when either fails (the caller may retry).
#[inline(never)]
fn publish<'a, T: Transport, M: Wire<'a>>(net: &mut T, kind: Kind, message: &M) -> bool {
    let mut buf = [0u8; mota_proto::limits::MAX_SMALL_MESSAGE_LEN];
    let Ok(len) = message.encode_into(&mut buf) else { return false };
    buf.get(..len).is_some_and(|bytes| net.publish(kind, bytes).is_ok())
}

/// Reports a refusal that changed nothing, under the reserved key (rollout 0, seq 0),
/// naming the manifest it concerns when that is known (the backend files it there).
fn publish_refusal<T: Transport>(net: &mut T, manifest: Option<Digest>, code: ErrorCode) {
    publish(net, Kind::Status, &Report::new(0, 0, Event::Rejected, manifest, Some(code)).status());
}

fn progress_status(job: &Job, seq: u32, event: Event, bytes_done: u32) -> Status<'static> {
    Status {
        rollout_id: job.rollout,
        seq,
        event,
        manifest: Some(job.manifest),
        bytes_done: Some(bytes_done),
        ..Status::default()
    }
}
