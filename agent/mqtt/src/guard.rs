//! A guard between the stream and minimq for what minimq 0.10 cannot survive: a `PUBACK`
//! while none of the device's QoS 1 messages awaits one panics in its republication
//! buffer (`probe_header` unwraps the first pending message; found by the `session` fuzz
//! target). A broker never sends one; line noise, a broker bug or an attacker on an
//! unprotected link can, and device code never panics on input. The guard follows the
//! packets both ways (first byte and remaining length only, not the protocol) and drops
//! such a `PUBACK` whole before minimq reads it.

const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;

/// Where one direction of the stream is, packet by packet.
#[derive(Debug, Clone, Copy, Default)]
enum Framer {
    /// The next byte starts a packet.
    #[default]
    Start,
    /// Reading the remaining length of the packet that began with `first`.
    Length { first: u8, length: u32, shift: u32 },
    /// In the body: byte `at` of it, `left` to come including this one.
    Body { first: u8, at: u32, left: u32 },
}

/// What a byte is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// The first byte of a packet.
    First,
    /// A byte of its remaining length.
    Length,
    /// Body byte number `n` (from 0).
    Body(u32),
}

impl Framer {
    /// Steps over `byte`: the first byte of its packet, and where it is in it.
    fn step(&mut self, byte: u8) -> (u8, Position) {
        let (next, seen) = match *self {
            Self::Start => (Self::Length { first: byte, length: 0, shift: 0 }, (byte, Position::First)),
            Self::Length { first, length, shift } => {
                let length = length | u32::from(byte & 0x7f) << shift;
                let next = match (byte & 0x80 == 0 || shift >= 21, length) {
                    (false, _) => Self::Length { first, length, shift: shift + 7 },
                    (true, 0) => Self::Start,
                    (true, left) => Self::Body { first, at: 0, left },
                };
                (next, (first, Position::Length))
            }
            Self::Body { first, at, left } => {
                let next = if left <= 1 { Self::Start } else { Self::Body { first, at: at + 1, left: left - 1 } };
                (next, (first, Position::Body(at)))
            }
        };
        *self = next;
        seen
    }
}

/// Follows both directions and filters what reaches minimq.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Guard {
    outbound: Framer,
    inbound: Framer,
    /// QoS 1 messages sent and not yet acknowledged.
    awaiting: u32,
    /// The inbound packet is being dropped.
    dropping: bool,
}

impl Guard {
    /// A new connection: both directions start at a packet boundary.
    pub(crate) fn restart(&mut self) {
        (self.outbound, self.inbound, self.dropping) = (Framer::Start, Framer::Start, false);
    }

    /// `bytes` went to the broker.
    pub(crate) fn sent(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            // A QoS 1 PUBLISH sent for the first time (a re-send has DUP set).
            if let (first, Position::First) = self.outbound.step(byte)
                && first >> 4 == PUBLISH
                && (first >> 1) & 3 == 1
                && first & 0x08 == 0
            {
                self.awaiting += 1;
            }
        }
    }

    /// `buf` came from the broker: drops the packets minimq must not see, moving the
    /// rest to the front; returns how many bytes are left.
    pub(crate) fn received(&mut self, buf: &mut [u8]) -> usize {
        let mut kept = 0;
        for i in 0..buf.len() {
            let byte = buf[i];
            match self.inbound.step(byte) {
                (first, Position::First) if first >> 4 == PUBACK => {
                    self.dropping = self.awaiting == 0;
                    self.awaiting = self.awaiting.saturating_sub(1);
                }
                (_, Position::First) => self.dropping = false,
                // CONNACK's flags: without a session present, minimq forgets what it sent.
                (first, Position::Body(0)) if first >> 4 == CONNACK && byte & 1 == 0 => self.awaiting = 0,
                _ => {}
            }
            if !self.dropping {
                buf[kept] = byte;
                kept += 1;
            }
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec;
    use std::vec::Vec;

    use super::*;

    const CONNACK_NEW: [u8; 5] = [0x20, 0x03, 0x00, 0x00, 0x00];
    const PUBLISH_QOS1: [u8; 9] = [0x32, 0x07, 0x00, 0x01, b't', 0x00, 0x05, 0x00, b'x'];
    const PUBACK_5: [u8; 4] = [0x40, 0x02, 0x00, 0x05];

    fn received(guard: &mut Guard, bytes: &[u8]) -> Vec<u8> {
        let mut buf = bytes.to_vec();
        let n = guard.received(&mut buf);
        buf.truncate(n);
        buf
    }

    #[test]
    fn a_puback_nothing_awaits_is_dropped_whole_and_the_rest_kept() {
        let mut guard = Guard::default();
        let stream = [&CONNACK_NEW[..], &PUBACK_5, &[0xd0, 0x00]].concat();
        assert_eq!(received(&mut guard, &stream), [&CONNACK_NEW[..], &[0xd0, 0x00]].concat());
    }

    #[test]
    fn a_puback_for_a_message_sent_passes_once() {
        let mut guard = Guard::default();
        received(&mut guard, &CONNACK_NEW);
        guard.sent(&PUBLISH_QOS1);
        assert_eq!(received(&mut guard, &PUBACK_5), PUBACK_5);
        assert_eq!(received(&mut guard, &PUBACK_5), []);
    }

    #[test]
    fn packets_split_anywhere_are_followed() {
        let mut guard = Guard::default();
        guard.sent(&PUBLISH_QOS1[..3]);
        guard.sent(&PUBLISH_QOS1[3..]);
        let stream = [&PUBACK_5[..], &PUBACK_5, &[0xd0, 0x00]].concat();
        let kept: Vec<u8> = stream.chunks(1).flat_map(|b| received(&mut guard, b)).collect();
        assert_eq!(kept, [&PUBACK_5[..], &[0xd0, 0x00]].concat());
    }

    #[test]
    fn resends_and_qos0_await_nothing_and_a_new_session_forgets() {
        let mut guard = Guard::default();
        guard.sent(&[0x3a, 0x07, 0x00, 0x01, b't', 0x00, 0x05, 0x00, b'x']); // DUP
        guard.sent(&[0x30, 0x05, 0x00, 0x01, b't', 0x00, b'x']); // QoS 0
        assert_eq!(received(&mut guard, &PUBACK_5), []);
        guard.sent(&PUBLISH_QOS1);
        assert_eq!(received(&mut guard, &CONNACK_NEW), CONNACK_NEW);
        assert_eq!(received(&mut guard, &PUBACK_5), []);
    }

    #[test]
    fn long_remaining_lengths_are_skipped_not_read_as_packets() {
        let mut guard = Guard::default();
        // A PUBLISH of 200 body bytes (two length bytes) full of PUBACK-looking bytes.
        let mut publish = vec![0x30, 0xc8, 0x01];
        publish.extend(std::iter::repeat_n(0x40, 200));
        assert_eq!(received(&mut guard, &publish), publish);
    }
}
