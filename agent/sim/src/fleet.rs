//! N devices in one process: one task and one MQTT connection each, on one thread.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use crate::device::{DeviceOptions, DeviceStatus, SimError, run_device};

/// A fleet: `count` devices made from one template.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// How many devices.
    pub count: usize,
    /// Id prefix: device `i` is `{prefix}{i:05}`.
    pub prefix: String,
    /// Directory for the flash files (`None`: in memory).
    pub data_dir: Option<PathBuf>,
    /// Pause between two devices' starts (to spread the connects).
    pub stagger: Duration,
    /// Every device is this one, with its own id, flash file and seed (`seed + i`).
    pub device: DeviceOptions,
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
            flash_file: opts.data_dir.as_ref().map(|d| d.join(format!("{id}.flash"))),
            seed: opts.device.seed.wrapping_add(i as u64),
            ..opts.device.clone()
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
