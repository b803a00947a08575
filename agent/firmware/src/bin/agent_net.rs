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
//! `mota-device ID: running NAME VERSION SHA256` when the active model changes,
//! `mota-device ID: confirmed VERSION` when the product confirmed a model on trial, and
//! `mota-device ID: reboot (REASON)` before a reset.
//!
//! The product side: after every change of the active model it runs one inference of
//! it (mota-runtime, its own arena) under a lease, and confirms a model on trial once
//! that inference ran. The agent erases 4 KiB and runs 10 validation records per poll,
//! so the session keeps serving the broker during an update.
#![no_std]
#![no_main]

use core::ffi::CStr;

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use mota_agent::state::Phase;
use mota_agent::{ActiveModel, Agent, Config, Leases, MapStore, RuntimeValidator, SlotMemory, Work};
use mota_agent_mqtt::{Session, SessionConfig, buffer_len};
use mota_firmware::board::{SysClock, Uart, nanos, sleep, start_clock};
use mota_firmware::demo::{self, MappedSlots, RamFlash};
use panic_semihosting as _;
use semihosting::experimental::env::Args;

type Validator = RuntimeValidator<MappedSlots, SysClock>;
type NetAgent = Agent<'static, RamFlash, MapStore<RamFlash>, Validator>;

/// What this device asks for per chunk request.
const CHUNK: u32 = 1024;

/// Boots the product may start on a new model before it confirms it.
const TRIAL_BOOTS: u8 = 3;

/// The product's inference and the agent share the slots.
static LEASES: Leases = Leases::new();

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
        trial_boots: TRIAL_BOOTS,
        work: Work { flash_bytes: 4096, records: 10 },
        leases: Some(&LEASES),
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
    let product_arena = cortex_m::singleton!(: [u8; 8 * 1024] = [0; 8 * 1024]).unwrap_or_else(|| halt("arena"));
    let mut shown = agent.active_model();
    announce(id, "boot running", shown);
    let mut tried = false;
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
            tried = false;
        }
        if !tried {
            tried = true;
            if infer(product_arena) && agent.on_trial() {
                match agent.confirm() {
                    Ok(()) => confirmed(id, shown),
                    Err(e) => reboot(id, &e),
                }
            }
        }
    }
}

/// The product's use of the model: one inference on a zero input, under a lease on the
/// active slot; whether it ran.
fn infer(arena: &mut [u8]) -> bool {
    let Some(lease) = LEASES.acquire() else { return false };
    MappedSlots.with_slots(|slots| {
        let Some(bytes) = slots.get(usize::from(lease.slot())) else { return false };
        let Ok(model) = mota_runtime::Model::parse(bytes) else { return false };
        let Ok(mut interpreter) = mota_runtime::Interpreter::new(model, arena) else { return false };
        interpreter.input(0).map(|x| x.fill(0)).is_ok() && interpreter.invoke().is_ok()
    })
}

fn confirmed(id: &str, model: Option<ActiveModel>) {
    let version = model.map(|m| m.installed.version).unwrap_or_default();
    hprintln!("mota-device {}: confirmed {}", id, version.as_str());
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
