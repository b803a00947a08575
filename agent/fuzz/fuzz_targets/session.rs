//! The device's MQTT session as the broker side of its byte stream sees it: after a
//! genuine CONNACK, whatever bytes the fuzzer sends (SUBACKs, PUBLISHes on the device's
//! topics and others', PINGRESPs, garbage, in any split) arrive through `ReadReady` and
//! `Read` in fuzzer-chosen pieces, with time passing between polls (pings, the CONNECT
//! timeout, the agent's ticks). The session and the agent behind it must never panic;
//! what the device writes goes nowhere.
#![no_main]

mod device;

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::rc::Rc;

use device::{Accept, Part, SLOT, STATE, config, part, store};
use embedded_io::{ErrorType, Read, ReadReady, Write};
use libfuzzer_sys::fuzz_target;
use mota_agent::{Agent, Clock};
use mota_agent_mqtt::{Session, SessionConfig, buffer_len};
use mota_simflash::Region;

/// A CONNACK (MQTT v5): session not present, success, no properties.
const CONNACK: &[u8] = &[0x20, 0x03, 0x00, 0x00, 0x00];

/// The broker's bytes, handed out a piece at a time (what arrived before this poll).
#[derive(Default)]
struct Feed {
    input: Vec<u8>,
    at: usize,
    piece: usize,
}

/// The device's end of the stream.
struct Broker(Rc<RefCell<Feed>>);

impl ErrorType for Broker {
    type Error = Infallible;
}

impl ReadReady for Broker {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(self.0.borrow().piece > 0)
    }
}

impl Read for Broker {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let mut feed = self.0.borrow_mut();
        let rest = feed.input.get(feed.at..).unwrap_or_default();
        let n = feed.piece.min(buf.len()).min(rest.len());
        buf[..n].copy_from_slice(&rest[..n]);
        feed.at += n;
        feed.piece -= n;
        Ok(n)
    }
}

impl Write for Broker {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

#[derive(Clone)]
struct Ticks(Rc<Cell<u64>>);

impl Clock for Ticks {
    fn now_ms(&self) -> u64 {
        self.0.get()
    }

    fn unix_time(&self) -> Option<u64> {
        None
    }
}

fuzz_target!(|data: &[u8]| {
    let config = config();
    let part = part();
    let mut arena = vec![0u8; 16 * 1024];
    let slots = [Region::<Part>::new(&part, STATE, SLOT), Region::new(&part, STATE + SLOT, SLOT)];
    let Ok(state) = store(&part) else { return };
    let Ok(mut agent) = Agent::boot(&config, slots, state, Accept, &mut arena) else {
        return;
    };
    // The CONNACK whole, then the fuzzer's bytes, each piece prefixed with its length.
    let feed = Rc::new(RefCell::new(Feed { input: data.to_vec(), at: 0, piece: 0 }));
    let clock = Ticks(Rc::new(Cell::new(0)));
    let settings = SessionConfig { device_id: config.device_id, password: Some("pw"), keep_alive_s: 30, tick_ms: 250 };
    let mut buffer = vec![0u8; buffer_len(config.chunk_bytes)];
    let Ok(mut session) =
        Session::new(Broker(Rc::clone(&feed)), clock.clone(), &settings, config.chunk_bytes, &mut buffer)
    else {
        return;
    };
    let _ = session.poll(&mut agent); // sends CONNECT
    {
        let mut f = feed.borrow_mut();
        let mut input = CONNACK.to_vec();
        input.extend_from_slice(data);
        (f.input, f.piece) = (input, CONNACK.len());
    }
    // Then 64 more polls, a second apart, for the timers: pings, the CONNECT timeout,
    // the agent's retries.
    let mut tail = 64;
    for _ in 0..4096 {
        if session.poll(&mut agent).is_err() || tail == 0 {
            return;
        }
        let mut f = feed.borrow_mut();
        let step = match f.input.get(f.at) {
            _ if f.piece > 0 => 97,
            Some(&n) => {
                f.at += 1;
                f.piece = usize::from(n);
                97
            }
            None => {
                tail -= 1;
                1000
            }
        };
        drop(f);
        clock.0.set(clock.0.get() + step);
    }
});
