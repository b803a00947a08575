//! The agent as the network and the power supply see it: a fuzzer-chosen sequence of
//! events against a device on simulated flash holding the factory model: the genuine
//! signed delta offer (the firmware demo's), chunks cut from the genuine artifacts at
//! fuzzer-chosen offsets and lengths (optionally corrupted), raw messages of any kind,
//! genuinely signed commands (rollback and cancel, for this device or another, naming
//! the right or a wrong model) and revocation lists, timer ticks, power cuts at a
//! chosen flash operation (before or tearing it) and reboots, the product's confirmation of a model on trial. The agent must never panic, and after every boot the model it would run
//! must hash to its record and be the factory model or the offered one.
#![no_main]

mod device;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::OnceLock;

use device::{Accept, FACTORY, Part, SLOT, STATE, config, part, store};
use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use mota_agent::{Agent, Clock, Config, MapStore, Transport};
use mota_proto::message::Chunk;
use mota_proto::sign::{ReleaseKey, certify, key_id, revoke};
use mota_proto::topic::Kind;
use mota_proto::{Action, CommandBody, Digest, Envelope, KeyId, Target, Wire};
use mota_simflash::{CutMode, Region};

static TARGET: &[u8] = include_bytes!("../../runtime/fixtures/models/digits_cnn_v2.tflite");
static OFFER: &[u8] = include_bytes!("../../firmware/data/offer.cbor");
static PATCH: &[u8] = include_bytes!("../../firmware/data/patch.mdlt");
static SET: &[u8] = include_bytes!("../../firmware/data/set.vset");

struct Sink;

impl Transport for Sink {
    type Error = ();
    fn publish(&mut self, _: Kind, _: &[u8]) -> Result<(), ()> {
        Ok(())
    }
}

struct Ticks(u64);

impl Clock for Ticks {
    fn now_ms(&self) -> u64 {
        self.0
    }
    fn unix_time(&self) -> Option<u64> {
        None
    }
}

fn boot<'c>(
    config: &'c Config<'c>,
    part: &Rc<RefCell<Part>>,
    arena: &'c mut [u8],
) -> Agent<'c, Region<Part>, MapStore<Region<Part>>, Accept> {
    let slots = [Region::new(part, STATE, SLOT), Region::new(part, STATE + SLOT, SLOT)];
    let agent = Agent::boot(config, slots, store(part).expect("state region"), Accept, arena)
        .expect("a powered boot must succeed");
    // The model it would run is verified and is one of the two.
    if let Some(m) = agent.active_model() {
        let start = (STATE + u32::from(m.image.slot) * SLOT) as usize;
        let digest = Digest::of(&part.borrow().contents()[start..start + m.installed.size as usize]);
        assert_eq!(digest, m.installed.sha256, "boot would run a model that does not match its record");
        assert!(digest == Digest::of(FACTORY) || digest == Digest::of(TARGET), "boot would run an unknown model");
    }
    agent
}

fuzz_target!(|data: &[u8]| {
    let config = config();
    let part = part();
    let mut arena = vec![0u8; 16 * 1024];
    let mut clock = Ticks(0);
    let mut input = data;
    let mut events = 0;
    // One iteration per boot: the agent borrows the arena until the power goes.
    while events < 64 {
        let mut agent = boot(&config, &part, &mut arena);
        let _ = agent.hello(&mut Sink, &clock);
        let mut rebooted = false;
        while events < 64 && !rebooted {
            events += 1;
            let Some((&op, rest)) = input.split_first() else { return };
            input = rest;
            let result = event(op, &mut input, &mut agent, &part, &mut clock);
            let Some(result) = result else { return };
            rebooted = result.is_err();
        }
        if !rebooted {
            return;
        }
        part.borrow_mut().restore_power();
    }
});

type FuzzAgent<'c> = Agent<'c, Region<Part>, MapStore<Region<Part>>, Accept>;

/// Runs event `op`, taking its operands from `input`; `None` when the input ran out.
fn event(
    op: u8,
    input: &mut &[u8],
    agent: &mut FuzzAgent<'_>,
    part: &Rc<RefCell<Part>>,
    clock: &mut Ticks,
) -> Option<Result<(), mota_agent::AgentError>> {
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, rest) = input.split_at_checked(n)?;
        *input = rest;
        Some(head)
    };
    let mut buf = [0u8; 2048];
    Some(match op % 8 {
        0 => agent.handle(Kind::Offer, OFFER, &mut Sink, clock),
        1 => {
            let &[which, off_hi, off_lo, len_hi, len_lo, mask] = take(6)? else { return None };
            let artifact = [PATCH, SET, TARGET][usize::from(which % 3)];
            let offset = (usize::from(off_hi) << 8 | usize::from(off_lo)) % (artifact.len() + 8);
            let len = (usize::from(len_hi) << 8 | usize::from(len_lo)) % 1100;
            let mut bytes = artifact.get(offset..(offset + len).min(artifact.len())).unwrap_or_default().to_vec();
            if let Some(b) = bytes.get_mut(usize::from(mask) % 64) {
                *b ^= mask;
            }
            match Chunk::data(Digest::of(artifact), offset as u32, &bytes).encode_into(&mut buf) {
                Ok(n) => agent.handle(Kind::Chunk, &buf[..n], &mut Sink, clock),
                Err(_) => Ok(()),
            }
        }
        2 => {
            let &[kind, len] = take(2)? else { return None };
            let payload = take(usize::from(len))?;
            agent.handle(Kind::ALL[usize::from(kind) % Kind::ALL.len()], payload, &mut Sink, clock)
        }
        3 => {
            let &[shape, seq] = take(2)? else { return None };
            if shape & 0x80 != 0 {
                agent.handle(Kind::Trust, revocation(shape & 1 == 0, seq), &mut Sink, clock)
            } else {
                agent.handle(Kind::Cmd, command(shape), &mut Sink, clock)
            }
        }
        4 => {
            clock.0 += 1000;
            agent.poll(&mut Sink, clock)
        }
        5 => agent.confirm(),
        6 => {
            let &[at, mode] = take(2)? else { return None };
            let mut p = part.borrow_mut();
            let op = p.stats().mutating() + 1 + u64::from(at);
            p.cut_at(op, [CutMode::Before, CutMode::TearPrefix, CutMode::TearBits][usize::from(mode % 3)]);
            Ok(())
        }
        _ => Err(mota_agent::AgentError::Flash), // a reboot
    })
}

/// The release key that signed the demo offer (seed 0x22, certified by the test root).
fn release() -> &'static ReleaseKey {
    static RELEASE: OnceLock<ReleaseKey> = OnceLock::new();
    RELEASE.get_or_init(|| {
        let key = SigningKey::from_bytes(&[0x22; 32]);
        let root = SigningKey::from_bytes(&[0x11; 32]);
        let cert = certify(&root, &key.verifying_key(), u64::MAX, 0..=99).expect("cert");
        let offer = Envelope::parse(OFFER).expect("the demo offer decodes");
        assert_eq!(offer.key_id, key_id(&key), "the demo offer's signer");
        ReleaseKey::new(key, cert).expect("release key")
    })
}

/// A genuinely signed command whose fields `shape` (its low 4 bits) picks: rollback or
/// cancel, this device or another, the offer's manifest or another, the factory model
/// or another. Signed once per shape.
fn command(shape: u8) -> &'static [u8] {
    static COMMANDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    let all = COMMANDS.get_or_init(|| (0..16).map(sign_command).collect());
    all.get(usize::from(shape & 15)).map_or(&[], Vec::as_slice)
}

/// A root-signed revocation list numbered `seq % 4`, of the release key or of another.
fn revocation(of_release: bool, seq: u8) -> &'static [u8] {
    static LISTS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    let all = LISTS.get_or_init(|| {
        let root = SigningKey::from_bytes(&[0x11; 32]);
        (0..8u32)
            .map(|i| {
                let key = if i < 4 { release().key_id() } else { KeyId([7; 8]) };
                revoke(&root, i % 4, &[key]).expect("list")
            })
            .collect()
    });
    let i = usize::from(seq % 4) + if of_release { 0 } else { 4 };
    all.get(i).map_or(&[], Vec::as_slice)
}

fn sign_command(shape: u8) -> Vec<u8> {
    let offer = Digest::of(Envelope::parse(OFFER).expect("the demo offer decodes").body);
    let bit = |n: u8| shape & (1 << n) != 0;
    let target = Target { image: if bit(3) { Digest([1; 32]) } else { Digest::of(FACTORY) }, manifest: None };
    let command = CommandBody {
        format: mota_proto::command::COMMAND_FORMAT_VERSION,
        device: if bit(1) { "other-device" } else { "fuzz-device" },
        rollout_id: 7,
        action: if bit(0) { Action::Cancel } else { Action::Rollback },
        subject: if bit(2) { Digest([2; 32]) } else { offer },
        target: (!bit(0)).then_some(target),
    };
    release().sign_command(&command).expect("command")
}
