//! N devices in one process: one task and one MQTT connection each, on one thread, or
//! spread over several threads when one core cannot keep up with the fleet (each device
//! patches and validates on the thread it runs on, as firmware does on its own core).

use std::cell::RefCell;
use std::ops::Range;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::oneshot;

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
    let all = 0..opts.count;
    start(&opts, all).await
}

/// Starts devices `range` of the fleet on the current `LocalSet`.
async fn start(opts: &FleetOptions, range: Range<usize>) -> Vec<(String, Rc<RefCell<DeviceStatus>>)> {
    let mut fleet = Vec::with_capacity(range.len());
    for i in range {
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

/// What a thread of a [`ThreadedFleet`] is asked: a copy of its devices' statuses.
type Ask = oneshot::Sender<Vec<(String, DeviceStatus)>>;

/// A fleet spread over threads, each running its share of the devices (a contiguous
/// range of ids) on its own single-threaded runtime. Dropping it stops every device.
#[derive(Debug)]
pub struct ThreadedFleet {
    asks: Vec<tokio::sync::mpsc::UnboundedSender<Ask>>,
}

impl ThreadedFleet {
    /// Starts `opts.count` devices on `threads` threads (at least one); returns once
    /// every device has been started. The stagger applies per thread, so starts are
    /// spread over the same time as on one thread.
    pub fn spawn(opts: FleetOptions, threads: usize) -> std::io::Result<Self> {
        let threads = threads.clamp(1, opts.count.max(1));
        let per_thread = FleetOptions { stagger: opts.stagger * threads as u32, ..opts.clone() };
        let (started, all_started) = mpsc::channel();
        let mut asks = Vec::with_capacity(threads);
        for t in 0..threads {
            let range = opts.count * t / threads..opts.count * (t + 1) / threads;
            let opts = per_thread.clone();
            let (ask, mut asked) = tokio::sync::mpsc::unbounded_channel::<Ask>();
            let started = started.clone();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            std::thread::Builder::new().name(format!("fleet-{t}")).spawn(move || {
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, async move {
                    let fleet = start(&opts, range).await;
                    let _ = started.send(());
                    while let Some(reply) = asked.recv().await {
                        let _ = reply.send(fleet.iter().map(|(id, s)| (id.clone(), s.borrow().clone())).collect());
                    }
                });
            })?;
            asks.push(ask);
        }
        drop(started);
        // A thread that panicked drops its sender; `recv` then fails instead of hanging.
        for _ in 0..threads {
            if all_started.recv().is_err() {
                break;
            }
        }
        Ok(Self { asks })
    }

    /// Every device's status, in id order.
    pub async fn statuses(&self) -> Vec<(String, DeviceStatus)> {
        let mut out = Vec::new();
        for ask in &self.asks {
            let (reply, answer) = oneshot::channel();
            if ask.send(reply).is_ok()
                && let Ok(part) = answer.await
            {
                out.extend(part);
            }
        }
        out
    }
}

fn report_failure(e: &SimError) {
    tracing::error!("device stopped: {e}");
}
