//! Processes for multi-replica tests and benchmarks: a Mosquitto of its own (restartable,
//! with persistence, so sessions, queued messages and retained offers survive its restart)
//! and real `mota-backend` replicas (the binary, configured through the environment),
//! killed with SIGKILL on request or on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::BoxError;

/// A free TCP port on loopback.
pub fn free_port() -> Result<u16, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Sends `signal` (`-TERM`, `-KILL`) to `pid`.
fn signal(pid: u32, signal: &str) -> Result<(), BoxError> {
    let status = Command::new("kill").arg(signal).arg(pid.to_string()).status()?;
    if !status.success() {
        return Err(format!("kill {signal} {pid} failed").into());
    }
    Ok(())
}

/// A private Mosquitto on a free port: `listener PORT 127.0.0.1`, anonymous clients, no
/// connection limit, the queue limit of `deploy/mosquitto/mosquitto.conf` (100,000
/// messages per offline session; Mosquitto's default of 1,000 drops what a killed
/// replica's session is still handed beyond that), persistence in its own directory
/// (`user root`: started as root, Mosquitto would otherwise switch to the `mosquitto`
/// user, who cannot write there; ignored when not started as root).
pub struct Mosquitto {
    pub port: u16,
    child: Option<Child>,
    conf: PathBuf,
    dir: tempfile::TempDir,
    /// Starts so far (1 after [`Mosquitto::start`]).
    pub starts: u32,
    /// Length of the log when it last started.
    log_at_start: usize,
}

impl Mosquitto {
    /// Starts it (`MOSQUITTO` names the binary, else `mosquitto` on the path, else
    /// `/usr/sbin/mosquitto`).
    pub fn start() -> Result<Self, BoxError> {
        Self::start_with("")
    }

    /// Starts it with `extra` configuration lines after the defaults (later lines win).
    pub fn start_with(extra: &str) -> Result<Self, BoxError> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\n\
                 max_queued_messages 100000\nmax_queued_bytes 0\n\
                 persistence true\npersistence_location {}/\n\
                 log_dest file {}\nlog_type error\nlog_type warning\nlog_type notice\n{extra}",
                dir.path().display(),
                dir.path().join("mosquitto.log").display()
            ),
        )?;
        let mut broker = Self { port, child: None, conf, dir, starts: 0, log_at_start: 0 };
        broker.up()?;
        Ok(broker)
    }

    fn binary() -> String {
        if let Ok(b) = std::env::var("MOSQUITTO") {
            return b;
        }
        let on_path = Command::new("mosquitto").arg("-h").stdout(Stdio::null()).stderr(Stdio::null()).status();
        if on_path.is_ok() { "mosquitto".into() } else { "/usr/sbin/mosquitto".into() }
    }

    fn up(&mut self) -> Result<(), BoxError> {
        self.log_at_start = std::fs::metadata(self.log()).map_or(0, |m| m.len() as usize);
        let child = Command::new(Self::binary())
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        self.starts += 1;
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(format!("mosquitto did not listen on {}; log in {}", self.port, self.dir.path().display()).into())
    }

    /// Stops it as an operator does (SIGTERM: it writes its persistence file and exits).
    pub fn stop(&mut self) -> Result<(), BoxError> {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "-TERM")?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts it again on the same port, configuration and persistence.
    pub fn restart(&mut self) -> Result<(), BoxError> {
        self.stop()?;
        self.up()
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Its process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its log file.
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }

    /// Whether client `id` has connected since the broker last started (from its log).
    pub fn connected_since_start(&self, id: &str) -> bool {
        let log = std::fs::read(self.log()).unwrap_or_default();
        let since = String::from_utf8_lossy(log.get(self.log_at_start..).unwrap_or_default()).into_owned();
        since.contains(&format!(" as {id} ("))
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `mota-backend` process (the binary `binary`, e.g. `env!("CARGO_BIN_EXE_mota-backend")`)
/// on `config`'s database, blobs and broker, with its own client id and data dir, serving
/// HTTP on `port`; its output (the log) appended to `log`. SIGKILLed on drop.
pub struct Replica {
    child: Option<Child>,
    pub port: u16,
    pub client_id: String,
    pub log: PathBuf,
}

impl Replica {
    /// Starts it and waits (30 s at most) until `/readyz` answers 200.
    pub async fn spawn(
        binary: &str,
        config: &mota_backend::Config,
        client_id: &str,
        port: u16,
        log: &Path,
    ) -> Result<Self, BoxError> {
        let mut cmd = Command::new(binary);
        cmd.env("MOTA_DATA_DIR", &config.data_dir)
            .env("MOTA_DATABASE_URL", config.database_url())
            .env("MOTA_MQTT_CLIENT_ID", client_id)
            .env("MOTA_MQTT_SHARE_GROUP", &config.mqtt_share_group)
            .env("MOTA_MQTT_LISTEN", config.mqtt_listen.to_string())
            .env("MOTA_LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", std::env::var("MOTA_REPLICA_LOG").unwrap_or_else(|_| "warn".into()));
        if let Some(url) = &config.mqtt_url {
            cmd.env("MOTA_MQTT_URL", url);
        }
        if let (Some(bucket), Some(endpoint)) = (&config.s3_bucket, &config.s3_endpoint) {
            cmd.env("MOTA_S3_BUCKET", bucket)
                .env("MOTA_S3_ENDPOINT", endpoint)
                .env("MOTA_S3_PATH_STYLE", "true")
                .env("MOTA_S3_ACCESS_KEY_ID", config.s3_access_key_id.clone().unwrap_or_default())
                .env("MOTA_S3_SECRET_ACCESS_KEY", config.s3_secret_access_key.clone().unwrap_or_default());
        }
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let child = cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out).spawn()?;
        let replica = Self { child: Some(child), port, client_id: client_id.to_owned(), log: log.to_owned() };
        super::eventually(30, "the replica to be ready", || async {
            let ready = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await;
            Ok(ready.is_ok_and(|r| r.status() == 200).then_some(()))
        })
        .await?;
        Ok(replica)
    }

    /// Its process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no clean disconnect, no flush; the broker keeps its persistent session.
    pub fn kill(&mut self) -> Result<(), BoxError> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Its `/metrics` counter `name` with label `outcome="…"` (0 when absent).
    pub async fn counter(&self, name: &str, outcome: &str) -> Result<f64, BoxError> {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.port)).await?.text().await?;
        let wanted = format!("{name}{{outcome=\"{outcome}\"}}");
        Ok(text
            .lines()
            .find(|l| l.starts_with(&wanted))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0))
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// CPU seconds (user + system) `pid` has used so far, its finished threads included
/// (from `/proc`, clock ticks of 10 ms).
pub fn cpu_seconds(pid: u32) -> f64 {
    stat_seconds(&format!("/proc/{pid}/stat"))
}

/// CPU seconds thread `tid` of `pid` has used so far.
pub fn cpu_seconds_of(pid: u32, tid: u32) -> f64 {
    stat_seconds(&format!("/proc/{pid}/task/{tid}/stat"))
}

fn stat_seconds(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else { return 0.0 };
    let Some(close) = stat.rfind(')') else { return 0.0 };
    let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// CPU seconds of every `postgres` process alive now, by pid.
pub fn postgres_cpu() -> std::collections::HashMap<u32, f64> {
    let mut out = std::collections::HashMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        if std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "postgres") {
            out.insert(pid, cpu_seconds(pid));
        }
    }
    out
}

/// PostgreSQL CPU seconds since `before` (processes started since count from 0).
pub fn postgres_since(before: &std::collections::HashMap<u32, f64>) -> f64 {
    postgres_cpu().iter().map(|(pid, t)| t - before.get(pid).copied().unwrap_or(0.0)).sum()
}

/// A server's state and router on a fresh database and bucket, configured for `broker` and
/// share group `group` (what every replica of a test or bench shares); its configuration.
pub async fn api_on(broker: &Mosquitto, group: &str) -> Result<(super::Api, mota_backend::Config), BoxError> {
    let mut chosen = None;
    let api = super::Api::with(|c| {
        c.no_mqtt = false;
        c.mqtt_url = Some(broker.url());
        c.mqtt_share_group = group.to_owned();
        chosen = Some(c.clone());
    })
    .await?;
    Ok((api, chosen.ok_or("no configuration")?))
}
