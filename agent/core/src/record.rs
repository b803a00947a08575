//! The state record's bytes: a format byte, then every field in a fixed order,
//! little-endian, options as a presence byte, texts as a length byte and UTF-8.
//!
//! The record is private to one device and never crosses the wire, so it needs neither
//! CBOR's self-description nor a schema language; sequential-storage's (or the
//! journal's) CRC guards the bytes. Decoding checks every length and value; trailing bytes
//! of this build's format are refused.
//!
//! A firmware update must never brick the agent, so every format is readable:
//!
//! | format | written by | read as |
//! |---|---|---|
//! | 1 | the first builds (CBOR maps) | migrated: slots, models, counter, report numbers; a job in flight is dropped |
//! | 2, 3 | hand layouts before the trial | migrated field by field (3 added the job's key, revocations, the rollback target) |
//! | 4 | this build | exactly |
//! | 5 and later | newer firmware (after a downgrade) | by the frozen prefix: what runs, the counter, report numbers, revocations, the trial; the job, report and command memory are dropped |
//!
//! The prefix of format 4 (format, active, counter, seq, revocations, current, previous,
//! trial) is frozen: later formats append after it and never change it, so any older
//! build still knows which verified model to run and which counter to hold.

use mota_proto::message::{ErrorCode, Event};
use mota_proto::{Delta, Digest, Image, KeyId, Target, Validation};

use crate::state::{Installed, Job, Phase, Report, Revoked, STATE_FORMAT, SetRef, State, Text, Trial};

/// Encodes `state` into `buf`; the length, or `None` if it does not fit.
pub fn encode(state: &State, buf: &mut [u8]) -> Option<usize> {
    let mut w = Writer { buf, at: 0 };
    // The frozen prefix.
    w.u8(STATE_FORMAT)?;
    w.u8(state.active)?;
    w.u32(state.counter)?;
    w.u32(state.seq)?;
    w.revoked(&state.revoked)?;
    w.opt(&state.current, Writer::installed)?;
    w.opt(&state.previous, Writer::installed)?;
    w.opt(&state.trial, |w, t| {
        w.u64(t.rollout)?;
        w.u8(t.boots)
    })?;
    // What is in flight.
    w.opt(&state.last_cmd, |w, d| w.digest(d))?;
    w.opt(&state.last_failed, |w, d| w.digest(d))?;
    w.opt(&state.job, Writer::job)?;
    w.opt(&state.report, Writer::report)?;
    Some(w.at)
}

/// Decodes a record of any format (see the table above), as this build's [`State`].
pub fn decode(bytes: &[u8]) -> Option<State> {
    if v1::is_v1(bytes) {
        return v1::decode(bytes);
    }
    let mut r = Reader { bytes, format: 0 };
    r.format = r.u8()?;
    // The format read, so the boot knows to write the record again in this one.
    let mut state = State { format: r.format, ..State::empty(0) };
    match r.format {
        0 | 1 => return None,
        2 | 3 => {
            state.active = r.u8().filter(|&a| a < 2)?;
            state.counter = r.u32()?;
            state.seq = r.u32()?;
            if r.format == 2 {
                r.u64()?; // the command id of format 2's unsigned commands: gone
            } else {
                state.last_cmd = r.opt(Reader::digest)?;
                state.revoked = r.revoked()?;
            }
            state.last_failed = r.opt(Reader::digest)?;
            state.current = r.opt(Reader::installed)?;
            state.previous = r.opt(Reader::installed)?;
        }
        _ => {
            state.active = r.u8().filter(|&a| a < 2)?;
            state.counter = r.u32()?;
            state.seq = r.u32()?;
            state.revoked = r.revoked()?;
            state.current = r.opt(Reader::installed)?;
            state.previous = r.opt(Reader::installed)?;
            state.trial = r.opt(|r| Some(Trial { rollout: r.u64()?, boots: r.u8()? }))?;
            if r.format > STATE_FORMAT {
                return Some(state); // a newer build's record: its prefix only
            }
            state.last_cmd = r.opt(Reader::digest)?;
            state.last_failed = r.opt(Reader::digest)?;
        }
    }
    state.job = r.opt(Reader::job)?;
    state.report = r.opt(Reader::report)?;
    r.bytes.is_empty().then_some(state)
}

struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Option<()> {
        self.buf.get_mut(self.at..self.at + bytes.len())?.copy_from_slice(bytes);
        self.at += bytes.len();
        Some(())
    }

    fn u8(&mut self, v: u8) -> Option<()> {
        self.put(&[v])
    }

    fn u16(&mut self, v: u16) -> Option<()> {
        self.put(&v.to_le_bytes())
    }

    fn u32(&mut self, v: u32) -> Option<()> {
        self.put(&v.to_le_bytes())
    }

    fn u64(&mut self, v: u64) -> Option<()> {
        self.put(&v.to_le_bytes())
    }

    fn digest(&mut self, d: &Digest) -> Option<()> {
        self.put(&d.0)
    }

    fn text<const N: usize>(&mut self, t: &Text<N>) -> Option<()> {
        let s = t.as_str();
        self.u8(u8::try_from(s.len()).ok()?)?;
        self.put(s.as_bytes())
    }

    fn opt<T>(&mut self, v: &Option<T>, f: impl FnOnce(&mut Self, &T) -> Option<()>) -> Option<()> {
        match v {
            Some(v) => {
                self.u8(1)?;
                f(self, v)
            }
            None => self.u8(0),
        }
    }

    fn installed(&mut self, m: &Installed) -> Option<()> {
        self.digest(&m.sha256)?;
        self.u32(m.size)?;
        self.u32(m.counter)?;
        self.text(&m.name)?;
        self.text(&m.version)?;
        self.u32(m.arena_bytes)?;
        self.opt(&m.manifest, |w, d| w.digest(d))?;
        self.opt(&m.set, |w, s| {
            w.digest(&s.sha256)?;
            w.u32(s.size)
        })?;
        self.opt(&m.accuracy_permille, |w, &a| w.u16(a))
    }

    fn job(&mut self, j: &Job) -> Option<()> {
        self.digest(&j.manifest)?;
        self.put(&j.key.0)?;
        self.u64(j.rollout)?;
        self.u32(j.counter)?;
        self.text(&j.name)?;
        self.text(&j.version)?;
        self.u32(j.image.size)?;
        self.digest(&j.image.sha256)?;
        self.opt(&j.delta, |w, d| {
            w.digest(&d.base_sha256)?;
            w.u32(d.patch_size)?;
            w.digest(&d.patch_sha256)?;
            w.u16(d.codec)
        })?;
        self.opt(&j.validation, |w, v| {
            w.digest(&v.set_sha256)?;
            w.u32(v.set_size)?;
            w.u16(v.min_accuracy_permille)?;
            w.u16(v.max_drop_permille)
        })?;
        self.u32(j.arena_bytes)?;
        self.u8(match j.phase {
            Phase::Image => 0,
            Phase::Set => 1,
            Phase::Validate => 2,
            Phase::Erase => 3,
        })?;
        self.u32(j.progress)?;
        self.u32(j.written)?;
        self.opt(&j.checkpoint, |w, c| w.put(c))?;
        self.u8(j.trials)?;
        self.u8(j.restarts)
    }

    fn report(&mut self, r: &Report) -> Option<()> {
        self.u64(r.rollout)?;
        self.u32(r.seq)?;
        self.u8(event_code(r.event))?;
        self.opt(&r.manifest, |w, d| w.digest(d))?;
        self.opt(&r.accuracy_permille, |w, &v| w.u16(v))?;
        self.opt(&r.previous_accuracy_permille, |w, &v| w.u16(v))?;
        self.opt(&r.latency_us, |w, &v| w.u32(v))?;
        self.opt(&r.previous_latency_us, |w, &v| w.u32(v))?;
        self.opt(&r.arena_used, |w, &v| w.u32(v))?;
        self.opt(&r.error, |w, e| w.u16(e.0))?;
        self.opt(&r.rollback_target, |w, t| {
            w.digest(&t.image)?;
            w.opt(&t.manifest, |w, d| w.digest(d))
        })
    }

    fn revoked(&mut self, r: &Revoked) -> Option<()> {
        self.u32(r.seq)?;
        self.u8(u8::try_from(r.keys().len()).ok()?)?;
        r.keys().iter().try_for_each(|k| self.put(&k.0))
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    /// The format being read.
    format: u8,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.bytes.split_at_checked(n)?;
        self.bytes = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.array()?))
    }

    fn digest(&mut self) -> Option<Digest> {
        Some(Digest(self.array()?))
    }

    fn text<const N: usize>(&mut self) -> Option<Text<N>> {
        let len = usize::from(self.u8()?);
        Text::new(core::str::from_utf8(self.take(len)?).ok()?)
    }

    /// `Some(None)` for an absent field, `None` for malformed bytes.
    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        match self.u8()? {
            0 => Some(None),
            1 => f(self).map(Some),
            _ => None,
        }
    }

    fn installed(&mut self) -> Option<Installed> {
        Some(Installed {
            sha256: self.digest()?,
            size: self.u32()?,
            counter: self.u32()?,
            name: self.text()?,
            version: self.text()?,
            arena_bytes: self.u32()?,
            manifest: self.opt(Self::digest)?,
            set: self.opt(|r| Some(SetRef { sha256: r.digest()?, size: r.u32()? }))?,
            accuracy_permille: self.opt(Self::u16)?,
        })
    }

    fn job(&mut self) -> Option<Job> {
        Some(Job {
            manifest: self.digest()?,
            key: if self.format >= 3 { KeyId(self.array()?) } else { KeyId([0; 8]) },
            rollout: self.u64()?,
            counter: self.u32()?,
            name: self.text()?,
            version: self.text()?,
            image: Image { size: self.u32()?, sha256: self.digest()? },
            delta: self.opt(|r| {
                Some(Delta {
                    base_sha256: r.digest()?,
                    patch_size: r.u32()?,
                    patch_sha256: r.digest()?,
                    codec: r.u16()?,
                })
            })?,
            validation: self.opt(|r| {
                Some(Validation {
                    set_sha256: r.digest()?,
                    set_size: r.u32()?,
                    min_accuracy_permille: r.u16()?,
                    max_drop_permille: r.u16()?,
                })
            })?,
            arena_bytes: self.u32()?,
            phase: match self.u8()? {
                0 => Phase::Image,
                1 => Phase::Set,
                2 => Phase::Validate,
                3 => Phase::Erase,
                _ => return None,
            },
            progress: self.u32()?,
            written: self.u32()?,
            checkpoint: self.opt(Self::array)?,
            trials: self.u8()?,
            restarts: self.u8()?,
        })
    }

    fn report(&mut self) -> Option<Report> {
        Some(Report {
            rollout: self.u64()?,
            seq: self.u32()?,
            event: event_from(self.u8()?)?,
            manifest: self.opt(Self::digest)?,
            accuracy_permille: self.opt(Self::u16)?,
            previous_accuracy_permille: self.opt(Self::u16)?,
            latency_us: self.opt(Self::u32)?,
            previous_latency_us: self.opt(Self::u32)?,
            arena_used: self.opt(Self::u32)?,
            error: self.opt(|r| r.u16().map(ErrorCode))?,
            rollback_target: match self.format {
                2 => None,
                _ => self.opt(|r| Some(Target { image: r.digest()?, manifest: r.opt(Self::digest)? }))?,
            },
        })
    }

    fn revoked(&mut self) -> Option<Revoked> {
        let mut revoked = Revoked::new(self.u32()?);
        let len = self.u8()?;
        if usize::from(len) > mota_proto::revocation::MAX_REVOKED {
            return None;
        }
        for _ in 0..len {
            revoked.push(KeyId(self.array()?));
        }
        Some(revoked)
    }
}

/// Format 1: CBOR maps with integer keys (minicbor's derive in the first builds). Only
/// what a device needs to go on running is taken: the slot, the counter, the report
/// numbers and both installed models; a job in flight is dropped (the next accepted
/// offer erases its slot) and so is its report.
mod v1 {
    use super::{Digest, Installed, SetRef, State, Text};

    /// Nesting allowed while skipping values the migration does not need.
    const DEPTH: u8 = 8;

    /// Whether `bytes` start like a format 1 record (a CBOR map head, where later
    /// formats start with their format number).
    pub fn is_v1(bytes: &[u8]) -> bool {
        bytes.first().is_some_and(|b| b >> 5 == 5)
    }

    pub fn decode(bytes: &[u8]) -> Option<State> {
        let mut c = Cbor { bytes };
        let mut state = State { format: 1, ..State::empty(0) };
        let mut format = 0;
        // Fields that were `None` are absent from the map (minicbor's derive).
        c.map(|c, key| {
            match key {
                0 => format = c.uint()?,
                1 => state.active = u8::try_from(c.uint()?).ok().filter(|&a| a < 2)?,
                2 => state.counter = u32::try_from(c.uint()?).ok()?,
                3 => state.current = c.nullable(Cbor::installed)?,
                4 => state.previous = c.nullable(Cbor::installed)?,
                7 => state.seq = u32::try_from(c.uint()?).ok()?.max(1),
                _ => c.skip(DEPTH)?,
            }
            Some(())
        })?;
        (format == 1 && c.bytes.is_empty()).then_some(state)
    }

    struct Cbor<'a> {
        bytes: &'a [u8],
    }

    impl<'a> Cbor<'a> {
        /// A data item's major type and argument (definite lengths only).
        fn head(&mut self) -> Option<(u8, u64)> {
            let (&first, rest) = self.bytes.split_first()?;
            let n = match first & 0x1F {
                n @ 0..=23 => {
                    self.bytes = rest;
                    return Some((first >> 5, u64::from(n)));
                }
                24 => 1,
                25 => 2,
                26 => 4,
                27 => 8,
                _ => return None,
            };
            let (arg, rest) = rest.split_at_checked(n)?;
            self.bytes = rest;
            Some((first >> 5, arg.iter().fold(0, |v, &b| (v << 8) | u64::from(b))))
        }

        fn uint(&mut self) -> Option<u64> {
            self.head().filter(|&(major, _)| major == 0).map(|(_, v)| v)
        }

        fn string(&mut self, major: u8) -> Option<&'a [u8]> {
            let (_, len) = self.head().filter(|&(m, _)| m == major)?;
            let (s, rest) = self.bytes.split_at_checked(usize::try_from(len).ok()?)?;
            self.bytes = rest;
            Some(s)
        }

        fn digest(&mut self) -> Option<Digest> {
            Some(Digest(self.string(2)?.try_into().ok()?))
        }

        fn text<const N: usize>(&mut self) -> Option<Text<N>> {
            Text::new(core::str::from_utf8(self.string(3)?).ok()?)
        }

        /// `Some(None)` for CBOR null.
        fn nullable<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
            if let Some(rest) = self.bytes.strip_prefix(&[0xF6]) {
                self.bytes = rest;
                return Some(None);
            }
            f(self).map(Some)
        }

        /// The pairs of a map with integer keys.
        fn map(&mut self, mut field: impl FnMut(&mut Self, u64) -> Option<()>) -> Option<()> {
            let (_, pairs) = self.head().filter(|&(m, _)| m == 5)?;
            for _ in 0..pairs {
                let key = self.uint()?;
                field(self, key)?;
            }
            Some(())
        }

        fn skip(&mut self, depth: u8) -> Option<()> {
            let (major, arg) = self.head()?;
            let depth = depth.checked_sub(1)?;
            match major {
                0 | 1 | 7 => Some(()),
                2 | 3 => {
                    self.bytes = self.bytes.get(usize::try_from(arg).ok()?..)?;
                    Some(())
                }
                4 | 5 => (0..arg * u64::from(major - 3)).try_for_each(|_| self.skip(depth)),
                _ => self.skip(depth), // a tag: its value
            }
        }

        fn installed(&mut self) -> Option<Installed> {
            let mut m = Installed {
                sha256: Digest([0; 32]),
                size: 0,
                counter: 0,
                name: Text::default(),
                version: Text::default(),
                arena_bytes: 0,
                manifest: None,
                set: None,
                accuracy_permille: None,
            };
            let mut seen = 0u16;
            self.map(|c, key| {
                seen |= 1 << key.min(15);
                match key {
                    0 => m.sha256 = c.digest()?,
                    1 => m.size = u32::try_from(c.uint()?).ok()?,
                    2 => m.counter = u32::try_from(c.uint()?).ok()?,
                    3 => m.name = c.text()?,
                    4 => m.version = c.text()?,
                    5 => m.arena_bytes = u32::try_from(c.uint()?).ok()?,
                    6 => m.manifest = c.nullable(Cbor::digest)?,
                    7 => {
                        m.set = c.nullable(|c| {
                            let mut set = SetRef { sha256: Digest([0; 32]), size: 0 };
                            c.map(|c, key| {
                                match key {
                                    0 => set.sha256 = c.digest()?,
                                    1 => set.size = u32::try_from(c.uint()?).ok()?,
                                    _ => c.skip(DEPTH)?,
                                }
                                Some(())
                            })?;
                            Some(set)
                        })?
                    }
                    8 => m.accuracy_permille = c.nullable(|c| u16::try_from(c.uint()?).ok())?,
                    _ => c.skip(DEPTH)?,
                }
                Some(())
            })?;
            // The digest and the size are what a boot checks: both must have been there.
            (seen & 0b11 == 0b11).then_some(m)
        }
    }
}

fn event_code(e: Event) -> u8 {
    Event::ALL.iter().position(|&x| x == e).map_or(u8::MAX, |i| i as u8)
}

fn event_from(code: u8) -> Option<Event> {
    Event::ALL.get(usize::from(code)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MAX_STATE_LEN;
    use proptest::prelude::*;

    proptest! {
        /// Any bytes: no panic, and whatever decodes re-encodes to the same bytes.
        #[test]
        fn arbitrary_bytes_decode_canonically_or_not_at_all(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let mut bytes = bytes;
            if let Some(b) = bytes.first_mut() {
                *b = STATE_FORMAT;
            }
            if let Some(state) = decode(&bytes) {
                let mut buf = [0u8; MAX_STATE_LEN];
                let len = encode(&state, &mut buf);
                prop_assert_eq!(len.map(|n| &buf[..n]), Some(&bytes[..]));
            }
        }

        /// Records with every field varied round-trip.
        #[test]
        fn states_round_trip(active in 0u8..2, counter: u32, seq: u32, rollout: u64, acc in proptest::option::of(0u16..=1000),
                             phase in 0u8..4, progress: u32, name in "[a-z0-9_.-]{0,64}", event in 0u8..9,
                             revoked in 0usize..=8) {
            let text = Text::<64>::new(&name).unwrap_or_default();
            let installed = Installed {
                sha256: Digest([counter as u8; 32]), size: progress, counter, name: text,
                version: Text::new("1.0").unwrap_or_default(), arena_bytes: seq, manifest: None,
                set: acc.map(|a| SetRef { sha256: Digest([a as u8; 32]), size: u32::from(a) }), accuracy_permille: acc,
            };
            let job = Job {
                manifest: Digest([1; 32]), key: KeyId([phase; 8]), rollout, counter, name: text, version: Text::default(),
                image: Image { size: progress, sha256: Digest([2; 32]) }, delta: None, validation: None,
                arena_bytes: 0, phase: [Phase::Image, Phase::Set, Phase::Validate, Phase::Erase][usize::from(phase)],
                progress, written: seq, checkpoint: acc.map(|_| [9; 28]), trials: active, restarts: 0,
            };
            let mut report = Report::new(rollout, seq, Event::ALL[usize::from(event)], None, acc.map(ErrorCode));
            report.rollback_target = acc.map(|_| Target { image: Digest([3; 32]), manifest: None });
            let mut list = Revoked::new(seq);
            (0..revoked).for_each(|i| list.push(KeyId([i as u8; 8])));
            let state = State {
                format: STATE_FORMAT, active, counter, current: Some(installed), previous: acc.map(|_| installed),
                trial: acc.map(|a| Trial { rollout, boots: a as u8 }), job: Some(job), report: Some(report), seq, last_cmd: acc.map(|_| Digest([4; 32])), revoked: list,
                last_failed: None,
            };
            let mut buf = [0u8; MAX_STATE_LEN];
            let len = encode(&state, &mut buf).ok_or_else(|| TestCaseError::fail("does not fit"))?;
            prop_assert_eq!(decode(&buf[..len]), Some(state));

            // A newer format that appends fields after the frozen prefix: this build
            // keeps what runs and drops what is in flight.
            buf[0] = STATE_FORMAT + 1;
            let newer = decode(&buf[..len]).ok_or_else(|| TestCaseError::fail("prefix unread"))?;
            prop_assert_eq!(newer, State { format: STATE_FORMAT + 1, job: None, report: None, last_cmd: None, last_failed: None, ..state });
        }

        /// Any bytes after a format 1 map head or a later format number: no panic.
        #[test]
        fn older_and_newer_formats_never_panic(format in prop_oneof![Just(0xA8u8), 2u8..=3, 5u8..=255],
                                               bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let mut record = vec![format];
            record.extend(bytes);
            let _ = decode(&record);
        }
    }
}
