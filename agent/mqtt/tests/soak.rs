//! An MQTT session surviving a long validation (issue 19): a device with a short
//! keep-alive takes a genuinely signed update (the full digits_cnn_v2 image and a
//! validation set of every record the fixture has) from a real broker, the test answering
//! its chunk requests as the backend does. Its validator takes tens of milliseconds per
//! record, as a microcontroller's inference does, so the validation lasts several
//! keep-alive periods.
//!
//! With the agent's work bounded per poll (`Work`: a sector erased, a few records run),
//! the main loop comes back to the session often enough to ping: one connection from the
//! offer to the commit, no will. The contrast: the same update with the whole validation
//! inside one poll leaves the connection silent for longer than the broker allows (1.5
//! keep-alives, MQTT 5 §3.1.2.10; rumqttd and Mosquitto both enforce it), so the broker
//! drops the device, announces it offline, and the device comes back and reports.
//!
//! Mosquitto before 2.0.21 looks for silent clients only every 6 seconds (keepalive.c:
//! `last_keepalive_check + 5 < now`, in whole seconds), so it may drop a device up to 7 s
//! after 1.5 keep-alives; the unbounded validation outlasts that too, or the contrast
//! would hold on some runs only.

mod common;

use std::time::{Duration, Instant};

use common::{
    BoxError, Carrier, Device, Observer, PATIENCE, Setup, TestResult, Update, boot_agent_paced, broker, device_id,
    full_set, model, topic,
};
use mota_agent::Work;
use mota_agent::state::Phase;
use mota_proto::Wire;
use mota_proto::message::{Event, Status};
use mota_proto::topic::Kind;

/// The session's keep-alive: the broker drops a device silent for 1.5 of it.
const KEEP_ALIVE_S: u16 = 2;
/// How late Mosquitto 2.0 (before 2.0.21) may notice that: it checks every 6 s, in whole
/// seconds.
const MOSQUITTO_LATE: Duration = Duration::from_secs(7);
/// What one validation record costs the device on top of the host's inference: a
/// microcontroller runs the digits CNN in tens of milliseconds.
const PER_RECORD: Duration = Duration::from_millis(20);
/// The bounded work of one poll: a 4 KiB sector erased, a few records run (100 ms of
/// validation, well inside the half keep-alive at which the session pings).
const BOUNDED: Work = Work { flash_bytes: 4096, records: 5 };

fn keep_alive() -> Duration {
    Duration::from_secs(KEEP_ALIVE_S.into())
}

/// A device, the backend's side of the broker, and the update it is offered.
struct Soak {
    device: Device,
    observer: Observer,
    update: Update,
    /// Chunk requests answered so far.
    answered: usize,
    records: usize,
}

/// What the main loop saw, from its first poll to the committed report.
#[derive(Debug)]
struct Figures {
    /// Turns of the main loop (`Session::poll`; the agent's tick comes every 100 ms).
    polls: u32,
    /// Of those, the ones that began in phase `Validate`.
    validating_polls: u32,
    /// The longest of those.
    longest_poll: Duration,
    /// From the first poll in phase `Validate` to the end of the poll that committed.
    validation: Duration,
    /// From the first poll to the committed report heard.
    update: Duration,
}

impl Soak {
    /// The update offered (retained) before the device comes up; the device's agent does
    /// `work` per poll, and its validator takes [`PER_RECORD`] per record.
    fn start(test: &str, work: Work) -> Result<Self, BoxError> {
        let broker = broker()?;
        let id = device_id(test);
        let observer = Observer::new(&broker, &id)?;
        let (set, records) = full_set("digits_cnn_v2")?;
        let update = Update::full(&model("digits_cnn_v2")?, &set, 19)?;
        observer.publish(&topic(&id, Kind::Offer), &update.envelope, true)?;
        let agent = boot_agent_paced(&id, work, PER_RECORD)?;
        let setup = Setup { carrier: Carrier::Socket, keep_alive_s: KEEP_ALIVE_S, password: None };
        let device = Device::start_with(&broker, &id, setup, agent)?;
        Ok(Self { device, observer, update, answered: 0, records })
    }

    /// The backend's part: answers the chunk requests heard since the last call.
    fn serve(&mut self) -> TestResult {
        let gets = self.observer.heard(Kind::Get);
        for get in gets.get(self.answered..).unwrap_or_default() {
            let chunk = self.update.answer(get)?;
            self.observer.publish(&self.device.topic(Kind::Chunk), &chunk, false)?;
        }
        self.answered = gets.len();
        Ok(())
    }

    /// The device's terminal reports so far: (event, error code).
    fn outcomes(&self) -> Result<Vec<(Event, Option<u16>)>, BoxError> {
        let mut outcomes = Vec::new();
        for payload in self.observer.heard(Kind::Status) {
            let status = Status::parse(&payload)?;
            if status.event.is_terminal() {
                if (status.rollout_id, status.manifest) != (self.update.rollout, Some(self.update.manifest)) {
                    return Err(format!("a report on something else: {status:?}").into());
                }
                outcomes.push((status.event, status.error.map(|e| e.0)));
            }
        }
        Ok(outcomes)
    }

    /// The firmware's main loop with the backend answering in between, until the
    /// observer hears the commit; `check` runs after every poll.
    fn until_committed(&mut self, mut check: impl FnMut(&Device) -> TestResult) -> Result<Figures, BoxError> {
        let deadline = Instant::now() + 2 * PATIENCE;
        let first = Instant::now();
        let (mut polls, mut validating_polls) = (0, 0);
        let (mut validation_start, mut validation, mut longest_poll) = (None, None, Duration::ZERO);
        loop {
            let validating = self.device.agent.state().job.map(|j| j.phase) == Some(Phase::Validate);
            if validating {
                validation_start.get_or_insert_with(Instant::now);
                validating_polls += 1;
            }
            let poll = Instant::now();
            self.device.poll()?;
            polls += 1;
            if validating {
                longest_poll = longest_poll.max(poll.elapsed());
                if self.device.agent.state().job.is_none() {
                    validation = validation_start.map(|start: Instant| start.elapsed());
                }
            }
            check(&self.device)?;
            self.serve()?;
            match self.outcomes()?.first() {
                Some((Event::Committed, _)) => break,
                Some(other) => return Err(format!("the update ended {other:?}, not committed").into()),
                None => {}
            }
            if Instant::now() > deadline {
                return Err(format!("no commit within {:?} ({:?})", 2 * PATIENCE, self.device.tally).into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let validation = validation.ok_or("the commit came without a poll in phase Validate")?;
        Ok(Figures { polls, validating_polls, longest_poll, validation, update: first.elapsed() })
    }

    /// Leaves a shared broker clean.
    fn finish(self) -> TestResult {
        self.observer.publish(&self.device.topic(Kind::Offer), b"", true)
    }
}

/// The figures, for `--nocapture`.
fn report(what: &str, soak: &Soak, f: &Figures) {
    println!(
        "{what}: keep-alive {KEEP_ALIVE_S} s; {} records run twice at {PER_RECORD:?} each; validation {:.1} s \
         ({} polls, the longest {:.3} s); update {:.1} s ({} polls); {} connected, {} TCP connections, hellos {:?}",
        soak.records,
        f.validation.as_secs_f64(),
        f.validating_polls,
        f.longest_poll.as_secs_f64(),
        f.update.as_secs_f64(),
        f.polls,
        soak.device.tally.connected,
        soak.device.link.connects(),
        soak.observer.hellos().unwrap_or_default(),
    );
}

#[test]
fn a_session_stays_connected_through_a_validation_run_in_bounded_pieces() -> TestResult {
    let mut soak = Soak::start("soak", BOUNDED)?;
    let online = |d: &Device| -> TestResult {
        if d.tally.connected > 1 {
            return Err(format!("the session connected again ({:?})", d.tally).into());
        }
        if d.tally.connected == 1 && !d.session.is_online() {
            return Err("the session went offline".into());
        }
        Ok(())
    };
    let figures = soak.until_committed(online)?;
    // The broker would have dropped the device by now had it gone silent at the end.
    let settle = Instant::now() + keep_alive();
    while Instant::now() < settle {
        soak.device.poll()?;
        online(&soak.device)?;
        std::thread::sleep(Duration::from_millis(1));
    }
    report("bounded", &soak, &figures);

    // The scenario is the intended one: a validation of several keep-alive periods.
    assert!(figures.validation > 3 * keep_alive(), "{figures:?}");
    // One connection throughout: no reconnect, no will, and the commit reported on it.
    assert_eq!(soak.device.tally.connected, 1);
    assert!(soak.device.session.is_online());
    assert_eq!(soak.observer.hellos()?, [true], "one online hello, and no will");
    assert_eq!(soak.device.link.connects(), 1, "one TCP connection");
    assert_eq!(soak.outcomes()?.first(), Some(&(Event::Committed, None)));
    soak.finish()
}

#[test]
fn the_whole_validation_in_one_poll_outlasts_the_keep_alive() -> TestResult {
    let mut soak = Soak::start("unbounded", Work::default())?;
    let figures = soak.until_committed(|_| Ok(()))?;
    // The report may have come on the new connection before the will reached the observer.
    let deadline = Instant::now() + PATIENCE;
    while !soak.observer.hellos()?.contains(&false) && Instant::now() < deadline {
        soak.device.poll()?;
        std::thread::sleep(Duration::from_millis(1));
    }
    report("unbounded", &soak, &figures);

    // The scenario: one poll (as long as the whole validation) silent for longer than
    // the broker allows (1.5 keep-alives), even as late as Mosquitto 2.0 notices it.
    assert!(figures.longest_poll > keep_alive() * 3 / 2 + MOSQUITTO_LATE, "{figures:?}");
    assert!(figures.longest_poll * 10 > figures.validation * 9, "{figures:?}");
    // The broker dropped the device and said so; the device came back and reported.
    let hellos = soak.observer.hellos()?;
    assert_eq!(hellos.first(), Some(&true));
    assert!(hellos.contains(&false), "the broker never published the will: {hellos:?}");
    assert!(soak.device.tally.connected >= 2, "{:?}", soak.device.tally);
    assert!(soak.device.link.connects() >= 2);
    assert!(soak.device.session.is_online());
    assert_eq!(soak.outcomes()?.first(), Some(&(Event::Committed, None)));
    soak.finish()
}
