//! One harness for every remote command's test: a real backend on port 0 (and, when a
//! test needs devices, a simulated fleet) in this process, the same [`Stack`] `mota demo`
//! runs; and the real `mota` binary run against it as a user would, with its own empty
//! home so no config file of the machine leaks in.

use std::path::PathBuf;

use mota_cli::demo::{Stack, StackOptions};
use serde_json::Value;

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// What a run of `mota` gave.
#[derive(Debug)]
pub struct Out {
    /// Exit code.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// The stdout as JSON (for `--json` runs).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// A backend (and fleet) and a home directory for the CLI.
pub struct Env {
    pub stack: Stack,
    pub home: tempfile::TempDir,
}

impl Env {
    /// A backend with `devices` simulated devices (`demo-00000`, ...; class `cortex-m4`).
    pub async fn start(devices: usize) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let options = StackOptions { devices, listen: "127.0.0.1:0".parse()?, data_dir: None, qemu: Vec::new() };
        Ok(Self { stack: Stack::start(&options).await?, home: tempfile::tempdir()? })
    }

    /// Runs `mota ARGS` with the operator token.
    pub async fn mota(&self, args: &[&str]) -> Out {
        self.mota_as(Some(self.stack.token()), args).await
    }

    /// Runs `mota ARGS` with `token` (none: no MOTA_TOKEN).
    pub async fn mota_as(&self, token: Option<&str>, args: &[&str]) -> Out {
        let mut vars = vec![("MOTA_SERVER", self.stack.url())];
        vars.extend(token.map(|t| ("MOTA_TOKEN", t)));
        self.mota_with(&vars, args).await
    }

    /// Runs `mota ARGS` with only `vars` besides PATH and HOME (no MOTA_SERVER unless
    /// given: for what the config file says).
    pub async fn mota_with(&self, vars: &[(&str, &str)], args: &[&str]) -> Out {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mota"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .envs(vars.iter().copied());
        let out = command.output().await.unwrap_or_else(|e| panic!("running mota: {e}"));
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `mota ARGS` and insists it succeeds; its stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let out = self.mota(args).await;
        assert_eq!(out.code, 0, "mota {args:?} failed: {out:?}");
        out.stdout
    }

    /// Runs `mota --json ARGS` and insists it succeeds; its JSON.
    pub async fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.mota(&all).await;
        assert_eq!(out.code, 0, "mota {all:?} failed: {out:?}");
        out.json()
    }

    /// Stops the backend and the fleet.
    pub async fn stop(self) -> TestResult {
        self.stack.stop().await.map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// Runs `mota valset make` on the digits fixtures into the test's home; the set's path.
pub async fn make_digits_set(env: &Env) -> PathBuf {
    let set = env.home.path().join("digits.mvs");
    env.ok(&[
        "valset",
        "make",
        &arg(&fixture("digits_cnn_v1.tflite")),
        "--inputs",
        &arg(&fixture("digits_cnn_v1.inputs.npy")),
        "--labels",
        &arg(&fixture("digits_cnn_v1.labels.npy")),
        "-o",
        &arg(&set),
    ])
    .await;
    set
}

/// A runtime fixture file (`digits_cnn_v1.tflite`, ...).
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../agent/runtime/fixtures/models").join(name)
}

/// Its path as a string argument.
pub fn arg(path: &std::path::Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Polls `check` every 100 ms for up to `secs` seconds.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..secs * 10 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("timed out after {secs} s waiting for {what}");
}
