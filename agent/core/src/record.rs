//! The state record's bytes: a format byte, then every field in a fixed order,
//! little-endian, options as a presence byte, texts as a length byte and UTF-8.
//!
//! The record is private to one device and never crosses the wire, so it needs neither
//! CBOR's self-description nor schema evolution beyond the format byte: a record of
//! another format is not read (the store reports it), and sequential-storage's CRC
//! already guards the bytes. Decoding checks every length and value; trailing bytes are
//! refused.

use mota_proto::message::{ErrorCode, Event};
use mota_proto::{Delta, Digest, Image, KeyId, Target, Validation};

use crate::state::{Installed, Job, Phase, Report, Revoked, STATE_FORMAT, SetRef, State, Text};

/// Encodes `state` into `buf`; the length, or `None` if it does not fit.
pub fn encode(state: &State, buf: &mut [u8]) -> Option<usize> {
    let mut w = Writer { buf, at: 0 };
    w.u8(STATE_FORMAT)?;
    w.u8(state.active)?;
    w.u32(state.counter)?;
    w.u32(state.seq)?;
    w.opt(&state.last_cmd, |w, d| w.digest(d))?;
    w.revoked(&state.revoked)?;
    w.opt(&state.last_failed, |w, d| w.digest(d))?;
    w.opt(&state.current, Writer::installed)?;
    w.opt(&state.previous, Writer::installed)?;
    w.opt(&state.job, Writer::job)?;
    w.opt(&state.report, Writer::report)?;
    Some(w.at)
}

/// Decodes a record written by [`encode`] (of this format).
pub fn decode(bytes: &[u8]) -> Option<State> {
    let mut r = Reader { bytes };
    if r.u8()? != STATE_FORMAT {
        return None;
    }
    let state = State {
        format: STATE_FORMAT,
        active: r.u8().filter(|&a| a < 2)?,
        counter: r.u32()?,
        seq: r.u32()?,
        last_cmd: r.opt(Reader::digest)?,
        revoked: r.revoked()?,
        last_failed: r.opt(Reader::digest)?,
        current: r.opt(Reader::installed)?,
        previous: r.opt(Reader::installed)?,
        job: r.opt(Reader::job)?,
        report: r.opt(Reader::report)?,
    };
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
        self.u8(j.phase as u8)?;
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
            key: KeyId(self.array()?),
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
            rollback_target: self.opt(|r| Some(Target { image: r.digest()?, manifest: r.opt(Self::digest)? }))?,
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
                             phase in 0u8..3, progress: u32, name in "[a-z0-9_.-]{0,64}", event in 0u8..8,
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
                arena_bytes: 0, phase: [Phase::Image, Phase::Set, Phase::Validate][usize::from(phase)],
                progress, written: seq, checkpoint: acc.map(|_| [9; 28]), trials: active, restarts: 0,
            };
            let mut report = Report::new(rollout, seq, Event::ALL[usize::from(event)], None, acc.map(ErrorCode));
            report.rollback_target = acc.map(|_| Target { image: Digest([3; 32]), manifest: None });
            let mut list = Revoked::new(seq);
            (0..revoked).for_each(|i| list.push(KeyId([i as u8; 8])));
            let state = State {
                format: STATE_FORMAT, active, counter, current: Some(installed), previous: acc.map(|_| installed),
                job: Some(job), report: Some(report), seq, last_cmd: acc.map(|_| Digest([4; 32])), revoked: list,
                last_failed: None,
            };
            let mut buf = [0u8; MAX_STATE_LEN];
            let len = encode(&state, &mut buf).ok_or_else(|| TestCaseError::fail("does not fit"))?;
            prop_assert_eq!(decode(&buf[..len]), Some(state));
        }
    }
}
