//! N devices in one process: one task and one MQTT connection each, on one thread.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::device::{DeviceOptions, DeviceStatus, Faults, SimError, run_device};

/// A fleet.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// How many devices.
    pub count: usize,
    /// Id prefix: device `i` is `{prefix}{i:05}`.
    pub prefix: String,
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Device class of every device.
    pub class: String,
    /// Trusted roots.
    pub roots: Vec<[u8; 32]>,
    /// Factory model.
    pub factory: Arc<[u8]>,
    /// Its security counter.
    pub factory_counter: u32,
    /// Directory for the flash files (`None`: in memory).
    pub data_dir: Option<PathBuf>,
    /// Faults, for every device.
    pub faults: Faults,
    /// Seed; device `i` uses `seed + i`.
    pub seed: u64,
    /// Pause between two devices' starts (to spread the connects).
    pub stagger: Duration,
}

/// The id of device `i`.
pub fn device_id(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:05}")
}

/// Starts every device on the current `LocalSet`; returns their status cells. The
/// devices run until the set (or the runtime) is dropped.
pub async fn run_fleet(opts: FleetOptions) -> Vec<(String, Rc<RefCell<DeviceStatus>>)> {
    let mut fleet = Vec::with_capacity(opts.count);
    for i in 0..opts.count {
        let id = device_id(&opts.prefix, i);
        let device = DeviceOptions {
            id: id.clone(),
            host: opts.host.clone(),
            port: opts.port,
            class: opts.class.clone(),
            roots: opts.roots.clone(),
            factory: Arc::clone(&opts.factory),
            factory_counter: opts.factory_counter,
            flash_file: opts.data_dir.as_ref().map(|d| d.join(format!("{id}.flash"))),
            faults: opts.faults,
            seed: opts.seed.wrapping_add(i as u64),
        };
        let status = Rc::new(RefCell::new(DeviceStatus::default()));
        let cell = Rc::clone(&status);
        tokio::task::spawn_local(async move {
            if let Err(e) = run_device(device, cell).await {
                report_failure(&e);
            }
        });
        fleet.push((id, status));
        if !opts.stagger.is_zero() {
            tokio::time::sleep(opts.stagger).await;
        }
    }
    fleet
}

fn report_failure(e: &SimError) {
    tracing::error!("device stopped: {e}");
}
