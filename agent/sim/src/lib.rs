//! Simulated devices for the backend to talk to: the real agent (verification, patching,
//! the state record, mota-runtime validation) on simulated NOR flash, over real MQTT.
//!
//! A device is one `SimFlash` part (file-backed, so it keeps its flash across process
//! restarts) split into the state region and two model slots, one MQTT connection, and
//! the agent driven by an async loop. A fleet is N such devices in one process, on one
//! thread (a `LocalSet`: the agent is single-threaded, as in firmware) or spread over a
//! few (`ThreadedFleet`), each device on one of them. Fault knobs
//! reproduce what fleets see: power cuts at a random flash operation (before or inside
//! it), dropped connections, slow links.
//!
//! [`memdev`] is one such device without a network, driven by calls (connect, deliver,
//! poll, arm a cut, reboot), for deterministic model-based tests of the backend.

pub mod broker;
pub mod device;
pub mod fleet;
pub mod memdev;

pub use device::{DeviceOptions, DeviceStatus, Faults, SimError, run_device};
pub use fleet::{FleetOptions, ThreadedFleet, device_id, run_fleet};
pub use memdev::{MemDevice, MemOptions, Up};
