//! What `Session::new` refuses before anything goes on the wire, and the largest settings
//! it promises to take (an id of 64 bytes, a password of 128), which must connect.

mod common;

use common::{Broker, Carrier, Device, Setup, TcpLink, TestResult, broker, device_id};
use mota_agent::Clock;
use mota_agent_mqtt::{Session, SessionConfig, SessionError, buffer_len};

/// A clock that never moves: `Session::new` does not read it.
#[derive(Clone)]
struct Still;

impl Clock for Still {
    fn now_ms(&self) -> u64 {
        0
    }

    fn unix_time(&self) -> Option<u64> {
        None
    }
}

/// `Session::new` over a real link, with a buffer of `buffer` bytes; `None` if it took it.
fn refusal(
    broker: &Broker,
    device_id: &str,
    password: Option<&str>,
    chunk: u32,
    buffer: usize,
) -> Result<Option<SessionError>, common::BoxError> {
    let link = TcpLink::connect(broker, Carrier::Socket)?;
    let config = SessionConfig { device_id, password, keep_alive_s: 30, tick_ms: 100 };
    let mut buffer = vec![0u8; buffer];
    Ok(Session::new(link, Still, &config, chunk, &mut buffer).err())
}

#[test]
fn refuses_a_device_id_that_cannot_be_a_topic_level() -> TestResult {
    let broker = broker()?;
    let too_long = "d".repeat(65);
    for id in ["", "a/b", "dev+1", "dev#", "$SYS", "with space", "ünïcode", too_long.as_str()] {
        let refused = refusal(&broker, id, None, 1024, buffer_len(1024))?;
        assert_eq!(refused, Some(SessionError::DeviceId), "device id {id:?}");
    }
    let longest = "d".repeat(64);
    assert_eq!(refusal(&broker, &longest, None, 1024, buffer_len(1024))?, None);
    Ok(())
}

#[test]
fn refuses_a_buffer_smaller_than_buffer_len() -> TestResult {
    let broker = broker()?;
    let id = device_id("buffer");
    for chunk in [64, 1024, 4096] {
        let need = buffer_len(chunk);
        assert_eq!(refusal(&broker, &id, None, chunk, need - 1)?, Some(SessionError::Buffer), "chunk {chunk}");
        assert_eq!(refusal(&broker, &id, None, chunk, 0)?, Some(SessionError::Buffer), "chunk {chunk}");
        assert_eq!(refusal(&broker, &id, None, chunk, need)?, None, "chunk {chunk}");
    }
    // A larger chunk needs a larger buffer: the agent's chunks must fit what it receives.
    assert!(buffer_len(4096) > buffer_len(1024));
    assert_eq!(refusal(&broker, &id, None, 4096, buffer_len(1024))?, Some(SessionError::Buffer));
    Ok(())
}

#[test]
fn refuses_a_password_over_128_bytes() -> TestResult {
    let broker = broker()?;
    let id = device_id("password");
    let long = "p".repeat(129);
    assert_eq!(refusal(&broker, &id, Some(&long), 1024, buffer_len(1024))?, Some(SessionError::Settings));
    assert_eq!(refusal(&broker, &id, Some(&long[..128]), 1024, buffer_len(1024))?, None);
    Ok(())
}

/// The limits `SessionError::Settings` documents, together, in a buffer of exactly
/// `buffer_len`: the client id, the login and the will all fit, and the device connects
/// and says hello with them.
#[test]
fn the_longest_id_and_password_fit_in_buffer_len_and_connect() -> TestResult {
    let broker = broker()?;
    let mut id = device_id("longest");
    id.extend(std::iter::repeat_n('x', 64 - id.len()));
    let password: &'static str = String::leak("p".repeat(128));
    assert_eq!(refusal(&broker, &id, Some(password), 1024, buffer_len(1024))?, None);

    let observer = common::Observer::new(&broker, &id)?;
    let mut device = Device::start(&broker, &id, Setup { password: Some(password), ..Setup::default() })?;
    device.run_until("the online hello", |d| Ok(d.tally.connected == 1 && observer.hellos()? == [true]))
}
