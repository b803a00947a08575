//! Devices that are real firmware: QEMU Cortex-M4 machines (`mps2-an386`) running the
//! networked firmware images (agent/firmware's `agent-net`, agent/ffi's C example),
//! each with its UART carried to a Mosquitto broker and its flash in a file, for
//! `mota demo --qemu` and the kill test.
//!
//! The firmware speaks MQTT v5 (minimq), which the backend's embedded broker (v4) does
//! not; so these devices come with a Mosquitto of their own, started here on a free
//! loopback port, and the backend connects to it as its external broker.
//!
//! `MOTA_QEMU_ARGS` adds arguments to every QEMU (`-icount shift=0,align=off,sleep=on`
//! makes the devices' `cpu` figures instruction counts).
//!
//! A device tells what it does in lines on its stdout (semihosting), kept in `ID.log`
//! beside its flash file; [`Fleet`] keeps the latest of each in a [`Seen`] per device,
//! with the bytes its MQTT connections carried (each device's UART reaches the broker
//! through a counting relay). [`Fleet::kill`] is a power cut: SIGKILL
//! to QEMU, then the same firmware boots again from the same flash file.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A Mosquitto on a free loopback port, stopped on drop.
pub struct Mosquitto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts `mosquitto` (from PATH) and waits until it accepts connections.
    pub async fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = mota_sim::broker::free_port().context("finding a free port for Mosquitto")?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\n"))?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting mosquitto (apt-get install mosquitto)")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if Instant::now() > deadline {
                bail!("mosquitto did not listen on port {port} within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self { child, port, _dir: dir })
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// What a device last said about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// SHA-256 (hex) of the model it runs.
    pub running: Option<String>,
    /// Its version.
    pub version: Option<String>,
    /// The phase of its update (`erase`, `image`, `set`, `validate`; `idle` without one).
    pub phase: String,
    /// The version its update is for.
    pub job: Option<String>,
    /// Boots so far (each start of QEMU, and each reset the firmware asked for).
    pub boots: u32,
    /// MQTT sessions it started.
    pub connects: u32,
    /// Times it was killed.
    pub kills: u32,
    /// A line that was not understood, or a firmware that stopped by itself.
    pub trouble: Option<String>,
    /// The last version its product confirmed after trying it (firmware that runs the
    /// product's trial).
    pub confirmed: Option<String>,
    /// Nanoseconds the core worked on its last update (in the boot that ended it); under
    /// `-icount shift=0` (`MOTA_QEMU_ARGS`), its instructions.
    pub cpu_ns: Option<u64>,
    /// Bytes the broker sent it, on the wire (MQTT, as the UART carried them).
    pub wire_down: u64,
    /// Bytes it sent the broker.
    pub wire_up: u64,
}

/// How to start the fleet.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Firmware images (ELF), taken in turn by the devices.
    pub firmware: Vec<PathBuf>,
    /// Device ids.
    pub ids: Vec<String>,
    /// The broker's port on 127.0.0.1.
    pub broker_port: u16,
    /// The root public key the devices trust (the factory writes it).
    pub root: [u8; 32],
    /// Where the flash files live.
    pub dir: PathBuf,
}

struct Device {
    id: String,
    firmware: PathBuf,
    flash: PathBuf,
    child: Option<Child>,
    /// The port of the device's relay to the broker.
    relay: u16,
}

/// QEMU devices, each its own process.
pub struct Fleet {
    options: FleetOptions,
    devices: Vec<Device>,
    seen: Arc<Mutex<HashMap<String, Seen>>>,
}

impl Fleet {
    /// Starts one QEMU per id.
    pub fn start(options: FleetOptions) -> Result<Self> {
        if options.firmware.is_empty() {
            bail!("no firmware image to run");
        }
        for image in &options.firmware {
            if !image.is_file() {
                bail!("firmware image {} not found (agent/firmware/scripts/demo.sh builds it)", image.display());
            }
        }
        let seen: Arc<Mutex<HashMap<String, Seen>>> = Arc::default();
        let mut devices = Vec::new();
        for (i, id) in options.ids.iter().enumerate() {
            devices.push(Device {
                id: id.clone(),
                firmware: options.firmware[i % options.firmware.len()].clone(),
                flash: options.dir.join(format!("{id}.flash")),
                child: None,
                relay: relay(id.clone(), options.broker_port, Arc::clone(&seen))?,
            });
        }
        let mut fleet = Self { options, devices, seen };
        for i in 0..fleet.devices.len() {
            fleet.spawn(i)?;
        }
        Ok(fleet)
    }

    /// The device ids, in order.
    pub fn ids(&self) -> Vec<String> {
        self.devices.iter().map(|d| d.id.clone()).collect()
    }

    /// The firmware image device `i` runs.
    pub fn firmware(&self, i: usize) -> Option<&Path> {
        self.devices.get(i).map(|d| d.firmware.as_path())
    }

    /// What device `id` last said.
    pub fn seen(&self, id: &str) -> Seen {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).get(id).cloned().unwrap_or_default()
    }

    /// Cuts device `i`'s power (SIGKILL to QEMU) and boots it again from its flash file.
    pub async fn kill(&mut self, i: usize) -> Result<()> {
        let device = self.devices.get_mut(i).context("no such device")?;
        if let Some(mut child) = device.child.take() {
            child.kill().await.with_context(|| format!("killing {}", device.id))?;
        }
        let id = device.id.clone();
        self.update(&id, |s| s.kills += 1);
        self.spawn(i)
    }

    /// Stops every device.
    pub async fn stop(&mut self) {
        for device in &mut self.devices {
            if let Some(mut child) = device.child.take() {
                let _ = child.kill().await;
            }
        }
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Seen)) {
        f(self.seen.lock().unwrap_or_else(PoisonError::into_inner).entry(id.to_owned()).or_default());
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let device = self.devices.get_mut(i).context("no such device")?;
        let semihosting = format!(
            "enable=on,target=native,arg=agent-net,arg={},arg={},arg={}",
            device.id,
            device.flash.display(),
            hex::encode(self.options.root)
        );
        let mut child = Command::new("qemu-system-arm")
            .args(["-cpu", "cortex-m4", "-machine", "mps2-an386", "-display", "none", "-monitor", "none"])
            .arg("-serial")
            .arg(format!("tcp:127.0.0.1:{},reconnect=1", device.relay))
            .arg("-semihosting-config")
            .arg(semihosting)
            .arg("-kernel")
            .arg(&device.firmware)
            .args(std::env::var("MOTA_QEMU_ARGS").unwrap_or_default().split_whitespace())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting qemu-system-arm (apt-get install qemu-system-arm)")?;
        let stdout = child.stdout.take().context("QEMU's stdout")?;
        device.child = Some(child);
        let (id, seen) = (device.id.clone(), Arc::clone(&self.seen));
        let log_path = self.options.dir.join(format!("{id}.log"));
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout);
            let mut line = Vec::new();
            // A line without its newline is one a power cut interrupted: dropped.
            while reader.read_until(b'\n', &mut line).await.is_ok_and(|n| n > 0) && line.ends_with(b"\n") {
                let _ = log.write_all(&line);
                let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                observe(seen.entry(id.clone()).or_default(), &id, String::from_utf8_lossy(&line).trim_end());
                line.clear();
            }
        });
        Ok(())
    }
}

/// Listens on a free loopback port for device `id`'s QEMU and relays each connection to
/// the broker, counting the bytes each way; returns the port.
fn relay(id: String, broker_port: u16, seen: Arc<Mutex<HashMap<String, Seen>>>) -> Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    let port = listener.local_addr()?.port();
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    tokio::spawn(async move {
        while let Ok((device, _)) = listener.accept().await {
            let Ok(broker) = tokio::net::TcpStream::connect(("127.0.0.1", broker_port)).await else { continue };
            let (id, seen) = (id.clone(), Arc::clone(&seen));
            tokio::spawn(async move {
                let (mut device_rx, mut device_tx) = device.into_split();
                let (mut broker_rx, mut broker_tx) = broker.into_split();
                let count = |down: bool| {
                    let (id, seen) = (id.clone(), Arc::clone(&seen));
                    move |n: usize| {
                        let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                        let seen = seen.entry(id.clone()).or_default();
                        *if down { &mut seen.wire_down } else { &mut seen.wire_up } += n as u64;
                    }
                };
                let _ = tokio::join!(
                    copy_counting(&mut device_rx, &mut broker_tx, count(false)),
                    copy_counting(&mut broker_rx, &mut device_tx, count(true)),
                );
            });
        }
    });
    Ok(port)
}

/// Copies until either side closes, telling `count` each block's size.
async fn copy_counting(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    count: impl Fn(usize),
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = [0u8; 4096];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        count(n);
    }
    let _ = to.shutdown().await;
}

/// When power cuts landed, by what the device was doing at that instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cuts {
    /// While the image or the validation set came in (or the patch was applied).
    pub download: u32,
    /// While the validation set ran.
    pub validation: u32,
    /// After the decision: the commit (or rejection) written, its report going out.
    pub decision: u32,
}

impl Cuts {
    /// All of them.
    pub fn total(&self) -> u32 {
        self.download + self.validation + self.decision
    }
}

/// Cuts per update: up to five while the image comes in (each cut resumes the download,
/// and the next one lands further on); one from the validation set's download to the
/// decision, since the phase a device reports lags what it does by a few milliseconds
/// and a validation run lasts tens of them (a second cut while validating would spend
/// the update's last trial: the agent cannot tell a power cut from a model that resets
/// the device, and gives the update up); two after the decision.
const DOWNLOAD_CUTS: u32 = 5;
/// Chance per look (every 5 ms or so) that a device still receiving its image is cut,
/// besides the cut set when the phase starts.
const DOWNLOAD_HAZARD: f64 = 0.05;
const DECISION_CUTS: u32 = 2;

/// Cuts devices' power at random moments of every update: each time a
/// device starts (or resumes) a phase of an update, and at random while its image comes
/// in, a cut is set for 0 to 150 ms later (at once for a validation run),
/// within the per-update limits above, and counted by what the device said it was doing
/// when it landed.
pub struct PowerCuts {
    dice: u64,
    last: HashMap<String, Seen>,
    /// Per device: when its cut is due, and the update (version) it was set for.
    pending: HashMap<usize, (Instant, String)>,
    /// Per device and update.
    per_update: HashMap<(String, String), Cuts>,
    /// Cuts made so far.
    pub done: Cuts,
}

impl PowerCuts {
    /// Cuts placed by a generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            dice: seed | 1,
            last: HashMap::new(),
            pending: HashMap::new(),
            per_update: HashMap::new(),
            done: Cuts::default(),
        }
    }

    /// Looks at what every device says and cuts those whose moment has come. Call it
    /// every few milliseconds.
    pub async fn step(&mut self, fleet: &mut Fleet) -> Result<()> {
        let now = Instant::now();
        for (i, id) in fleet.ids().into_iter().enumerate() {
            let seen = fleet.seen(&id);
            let before = self.last.insert(id.clone(), seen.clone()).unwrap_or_default();
            let moved = (&before.phase, &before.job, &before.running) != (&seen.phase, &seen.job, &seen.running);
            if self.pending.contains_key(&i) {
                continue;
            }
            let Some(update) = seen.job.clone().or(before.job.clone()) else { continue };
            let cuts = self.per_update.get(&(id.clone(), update.clone())).copied().unwrap_or_default();
            let wanted = match seen.phase.as_str() {
                "erase" | "image" => cuts.download < DOWNLOAD_CUTS && (moved || self.roll() < DOWNLOAD_HAZARD),
                // No cut is set for the set's download: one landing late would be a
                // second cut in validation.
                "set" => false,
                "validate" => moved && cuts.validation == 0,
                // Idle after a decision; not after a boot (the device says what it
                // resumes next).
                _ => moved && seen.boots == before.boots && cuts.decision < DECISION_CUTS,
            };
            if wanted {
                // A validation run lasts tens of milliseconds: its cut goes at once.
                let delay = match seen.phase.as_str() {
                    "validate" => Duration::ZERO,
                    _ => Duration::from_millis(self.next() % 150),
                };
                self.pending.insert(i, (now + delay, update));
            }
        }
        let due: Vec<(usize, String)> =
            self.pending.iter().filter(|(_, (at, _))| *at <= now).map(|(&i, (_, u))| (i, u.clone())).collect();
        for (i, update) in due {
            self.pending.remove(&i);
            let id = fleet.ids().get(i).cloned().unwrap_or_default();
            let phase = fleet.seen(&id).phase;
            let cuts = self.per_update.entry((id, update)).or_default();
            if matches!(phase.as_str(), "set" | "validate") && cuts.validation > 0 {
                continue;
            }
            fleet.kill(i).await?;
            match phase.as_str() {
                "erase" | "image" | "set" => self.done.download += 1,
                "validate" => self.done.validation += 1,
                _ => self.done.decision += 1,
            }
            match phase.as_str() {
                "erase" | "image" => cuts.download += 1,
                "set" | "validate" => cuts.validation += 1,
                _ => cuts.decision += 1,
            }
        }
        Ok(())
    }

    fn next(&mut self) -> u64 {
        mota_sim::device::next(&mut self.dice)
    }

    fn roll(&mut self) -> f64 {
        mota_sim::device::roll(&mut self.dice)
    }
}

/// Folds one line of a device's output into what is known of it.
fn observe(seen: &mut Seen, id: &str, line: &str) {
    let Some(what) =
        line.strip_prefix("mota-device ").and_then(|l| l.strip_prefix(id)).and_then(|l| l.strip_prefix(": "))
    else {
        seen.trouble = Some(line.to_owned());
        return;
    };
    let words: Vec<&str> = what.split(' ').collect();
    match words.as_slice() {
        ["boot", "running", _name, version, sha] => {
            seen.boots += 1;
            (seen.phase, seen.job) = ("idle".to_owned(), None);
            (seen.version, seen.running) = (Some((*version).to_owned()), Some((*sha).to_owned()));
        }
        ["running", _name, version, sha] => {
            (seen.version, seen.running) = (Some((*version).to_owned()), Some((*sha).to_owned()));
        }
        ["connected"] => seen.connects += 1,
        ["confirmed", version] => seen.confirmed = Some((*version).to_owned()),
        ["cpu", ns, "ns"] => seen.cpu_ns = ns.parse().ok(),
        ["phase", "idle"] => (seen.phase, seen.job) = ("idle".to_owned(), None),
        ["phase", phase, version] => (seen.phase, seen.job) = ((*phase).to_owned(), Some((*version).to_owned())),
        ["reboot", ..] => {}
        _ => seen.trouble = Some(line.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_fold_into_what_a_device_said() {
        let mut seen = Seen::default();
        for line in [
            "mota-device d1: boot running digits 1.0.0 aa",
            "mota-device d1: connected",
            "mota-device d1: phase image 1.1.0",
            "mota-device d1: phase validate 1.1.0",
            "mota-device d1: phase idle",
            "mota-device d1: cpu 71000 ns",
            "mota-device d1: running digits 1.1.0 bb",
            "mota-device d1: confirmed 1.1.0",
        ] {
            observe(&mut seen, "d1", line);
        }
        assert_eq!((seen.boots, seen.connects, seen.phase.as_str()), (1, 1, "idle"));
        assert_eq!((seen.version.as_deref(), seen.running.as_deref()), (Some("1.1.0"), Some("bb")));
        assert_eq!((seen.trouble.as_deref(), seen.cpu_ns), (None, Some(71_000)));
        observe(&mut seen, "d1", "panicked at src/main.rs:1:1");
        observe(&mut seen, "d1", "mota-device d2: connected");
        assert_eq!(seen.connects, 1);
        assert_eq!(seen.trouble.as_deref(), Some("mota-device d2: connected"));
    }
}
