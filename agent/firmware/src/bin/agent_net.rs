//! The networked firmware: mota-agent, mota-runtime and the MQTT session on a Cortex-M4
//! (QEMU mps2-an386), talking to the real backend through a real broker. UART0 is the
//! MQTT byte stream (QEMU: `-serial tcp:127.0.0.1:PORT,reconnect=1`); the part (state
//! region and two 32 KiB model slots, NOR rules kept) lives in a host file, so QEMU can be
//! killed at any instant and boots again from what was written.
//!
//! Provisioning comes from the semihosting command line, as a factory would write it:
//! `-semihosting-config enable=on,target=native,arg=agent-net,arg=ID,arg=FLASH_FILE,arg=ROOT_HEX[,arg=PASSWORD]`
//! (the device id, its flash file, the root public key it trusts as 64 hex digits, and
//! the MQTT password `mota device provision` gave it, if the broker wants one).
//!
//! Lines on stdout, for people and for the test harness:
//! `mota-device ID: boot running NAME VERSION SHA256`, `mota-device ID: connected`,
//! `mota-device ID: phase image|set|validate VERSION` when an update moves on and
//! `mota-device ID: phase idle` when it ends, `mota-device ID: cpu NS ns` then (the
//! time the core spent in session polls while the update was in progress in this boot,
//! sleeps excluded: under QEMU's `-icount shift=0`, its instructions),
//! `mota-device ID: running NAME VERSION SHA256` when the active model changes, and
//! `mota-device ID: reboot (REASON)` before a reset.
#![no_std]
#![no_main]

use core::ffi::CStr;

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use mota_agent::state::Phase;
use mota_agent::{ActiveModel, Agent, Config, MapStore, RuntimeValidator};
use mota_agent_mqtt::{Session, SessionConfig, buffer_len};
use mota_firmware::board::{SysClock, Uart, nanos, sleep, start_clock};
use mota_firmware::demo::{self, MappedSlots, RamFlash};
use panic_semihosting as _;
use semihosting::experimental::env::Args;

type Validator = RuntimeValidator<MappedSlots, SysClock>;
type NetAgent = Agent<'static, RamFlash, MapStore<RamFlash>, Validator>;

/// What this device asks for per chunk request.
const CHUNK: u32 = 1024;

/// The factory's provisioning, from the semihosting command line.
struct Provision {
    id: &'static str,
    flash: [u8; 256],
    root: [u8; 32],
    password: Option<&'static str>,
}

impl Provision {
    fn read(args: &'static Args<512>) -> Option<Self> {
        let mut args = args.into_iter().skip(1).map_while(Result::ok);
        let id = args.next()?;
        let path = args.next()?;
        let mut flash = [0u8; 256];
        flash.get_mut(..path.len())?.copy_from_slice(path.as_bytes());
        let hex = args.next()?.as_bytes();
        let mut root = [0u8; 32];
        for (i, byte) in root.iter_mut().enumerate() {
            let digit = |at: usize| hex.get(at).and_then(|&c| (c as char).to_digit(16));
            *byte = u8::try_from(digit(2 * i)? * 16 + digit(2 * i + 1)?).ok()?;
        }
        (hex.len() == 64).then_some(Self { id, flash, root, password: args.next() })
    }
}

#[entry]
fn main() -> ! {
    let Some(provision) = semihosting::experimental::env::args::<512>()
        .ok()
        .and_then(|args| cortex_m::singleton!(: Args<512> = args))
        .and_then(|args| Provision::read(args))
    else {
        halt("usage: agent-net DEVICE_ID FLASH_FILE ROOT_PUBLIC_KEY_HEX [MQTT_PASSWORD]")
    };
    let id = provision.id;
    let mut peripherals = cortex_m::Peripherals::take().unwrap_or_else(|| halt("peripherals taken"));
    start_clock(peripherals.SYST);

    let path = CStr::from_bytes_until_nul(&provision.flash).unwrap_or_else(|_| halt("flash file path too long"));
    let (a, b, state) = demo::regions_in(path).unwrap_or_else(|_| halt("cannot open the flash file"));
    let roots = cortex_m::singleton!(: [[u8; 32]; 1] = [provision.root]).unwrap_or_else(|| halt("roots"));
    let config = cortex_m::singleton!(: Config<'static> = Config {
        device_id: id,
        device_class: "cortex-m4",
        agent_version: "agent-net",
        roots,
        chunk_bytes: CHUNK,
        ..demo::CONFIG
    })
    .unwrap_or_else(|| halt("config"));
    let arena = cortex_m::singleton!(: [u8; 16 * 1024] = [0; 16 * 1024]).unwrap_or_else(|| halt("arena"));
    let validator = RuntimeValidator { memory: MappedSlots, clock: SysClock };
    let agent: &'static mut NetAgent = match MapStore::new(state, 0xFF)
        .map_err(Into::into)
        .and_then(|state| Agent::boot(config, [a, b], state, validator, arena))
    {
        Ok(agent) => cortex_m::singleton!(: NetAgent = agent).unwrap_or_else(|| halt("agent")),
        Err(e) => reboot(id, &e),
    };
    let mut shown = agent.active_model();
    announce(id, "boot running", shown);
    let mut phase = None;
    show_phase(id, agent, &mut phase);

    let buffer = cortex_m::singleton!(: [u8; buffer_len(CHUNK)] = [0; buffer_len(CHUNK)])
        .unwrap_or_else(|| halt("session buffer"));
    let settings = SessionConfig { device_id: id, password: provision.password, keep_alive_s: 30, tick_ms: 250 };
    let mut session = Session::new(Uart::take(&mut peripherals.NVIC), SysClock, &settings, CHUNK, buffer)
        .unwrap_or_else(|e| {
            halt(if matches!(e, mota_agent_mqtt::SessionError::DeviceId) { "bad device id" } else { "session" })
        });
    let mut worked = 0;
    loop {
        let started = nanos();
        let polled = session.poll(agent);
        if phase.is_some() || agent.state().job.is_some() {
            worked += nanos() - started;
        }
        match polled {
            Ok(progress) if progress.connected => hprintln!("mota-device {}: connected", id),
            Ok(progress) if progress.messages == 0 => sleep(),
            Ok(_) => {}
            Err(e) => reboot(id, &e),
        }
        let updating = phase.is_some();
        show_phase(id, agent, &mut phase);
        if updating && phase.is_none() {
            hprintln!("mota-device {}: cpu {} ns", id, worked);
            worked = 0;
        }
        let active = agent.active_model();
        if active.map(|m| m.installed.sha256) != shown.map(|m| m.installed.sha256) {
            shown = active;
            announce(id, "running", shown);
        }
    }
}

fn announce(id: &str, what: &str, model: Option<ActiveModel>) {
    match model {
        Some(m) => hprintln!(
            "mota-device {}: {} {} {} {}",
            id,
            what,
            m.installed.name.as_str(),
            m.installed.version.as_str(),
            m.installed.sha256
        ),
        None => hprintln!("mota-device {}: {} nothing", id, what),
    }
}

/// Prints the update's phase when it changed since `shown`.
fn show_phase(id: &str, agent: &NetAgent, shown: &mut Option<Phase>) {
    let job = agent.state().job;
    if job.map(|j| j.phase) == *shown {
        return;
    }
    *shown = job.map(|j| j.phase);
    match job {
        Some(j) => hprintln!("mota-device {}: phase {} {}", id, phase_name(j.phase), j.version.as_str()),
        None => hprintln!("mota-device {}: phase idle", id),
    }
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Erase => "erase",
        Phase::Image => "image",
        Phase::Set => "set",
        Phase::Validate => "validate",
    }
}

/// The agent could not go on (its flash failed): reset, as a watchdog would.
fn reboot(id: &str, why: &dyn core::fmt::Display) -> ! {
    hprintln!("mota-device {}: reboot ({})", id, why);
    cortex_m::peripheral::SCB::sys_reset()
}

fn halt(why: &str) -> ! {
    hprintln!("agent-net: {}", why);
    debug::exit(debug::EXIT_FAILURE);
    #[allow(clippy::empty_loop)]
    loop {}
}
