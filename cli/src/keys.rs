//! `mota keys`: the root key (trust anchor compiled into firmware, kept offline),
//! release keys (certified by the root for a bounded time and a bounded range of
//! security counters, used by the backend to sign manifests and commands, rotated
//! without touching firmware) and the root's revocation lists.
//!
//! Private keys are written as PKCS#8 PEM with mode 0600 and never printed.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use ed25519_dalek::VerifyingKey;
use mota_proto::keys::{KeyFile, certificate_pem, generate, private_key_pem, public_key_pem, write_secret_file};
use mota_proto::revocation::MAX_REVOKED;
use mota_proto::sign::{certify, revoke};
use mota_proto::{CertBody, KeyCertificate, KeyId, Wire, verify_certificate};
use reqwest::Method;
use serde::Serialize;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a root key pair: PREFIX.key.pem (keep it offline) and PREFIX.pub.pem
    /// (the public key to compile into firmware).
    RootNew {
        /// Path prefix of the files to write.
        #[arg(short, long, default_value = "root")]
        out: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Create a release key and its certificate signed by a root key:
    /// PREFIX.key.pem (for the backend) and PREFIX.cert.pem.
    ReleaseNew {
        /// The root private key file (from `mota keys root-new`).
        #[arg(long)]
        root: PathBuf,
        /// Days the certificate stays valid.
        #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
        /// The lowest security counter the key may sign.
        #[arg(long, default_value_t = 0)]
        min_counter: u32,
        /// The highest security counter the key may sign: a leaked key can raise devices'
        /// counters no further, and a key certified above it still updates them.
        #[arg(long, default_value_t = 1000)]
        max_counter: u32,
        /// Path prefix of the files to write.
        #[arg(short, long, default_value = "release")]
        out: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Write a revocation list signed by the root: devices that receive it refuse
    /// offers and commands signed by the listed release keys. It replaces the list
    /// before it, so name every key still revoked. Upload it with `revocation-push`.
    Revoke {
        /// The root private key file.
        #[arg(long)]
        root: PathBuf,
        /// The list's number: higher than the last one's (devices keep the highest).
        #[arg(long)]
        seq: u32,
        /// Release key ids to revoke (16 hex digits, as `mota keys show` prints them);
        /// none lifts every revocation.
        key_ids: Vec<KeyId>,
        /// The file to write.
        #[arg(short, long, default_value = "revocation.cbor")]
        out: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Upload a revocation list (from `mota keys revoke`); the backend publishes it to
    /// every device.
    RevocationPush {
        /// The file `mota keys revoke` wrote.
        file: PathBuf,
    },
    /// The revocation lists uploaded, newest first.
    Revocations,
    /// Show the public facts of a key or certificate file (never the secret).
    Show {
        /// A private key, public key or certificate PEM file.
        file: PathBuf,
        /// Also check a certificate's signature against this root (private or public key file).
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// The release key the backend signs with, and the root it chains to.
    Server,
}

pub async fn run(cmd: KeysCommand, ctx: &crate::Ctx) -> Result<()> {
    match cmd {
        KeysCommand::RootNew { out, force } => root_new(&out, force),
        KeysCommand::ReleaseNew { root, days, min_counter, max_counter, out, force } => {
            release_new(&root, days, min_counter..=max_counter, &out, force)
        }
        KeysCommand::Revoke { root, seq, key_ids, out, force } => revoke_keys(&root, seq, &key_ids, &out, force),
        KeysCommand::RevocationPush { file } => revocation_push(&ctx.client()?, &file, ctx.json).await,
        KeysCommand::Revocations => revocations(&ctx.client()?, ctx.json).await,
        KeysCommand::Show { file, root } => show(&file, root.as_deref(), ctx.json),
        KeysCommand::Server => server_keys(&ctx.client()?, ctx.json).await,
    }
}

fn root_new(prefix: &Path, force: bool) -> Result<()> {
    let (key_path, pub_path) = (with_suffix(prefix, ".key.pem"), with_suffix(prefix, ".pub.pem"));
    refuse_overwrite(&[&key_path, &pub_path], force)?;
    let key = generate()?;
    write_secret(&key_path, &private_key_pem(&key)?)?;
    write_public(&pub_path, &public_key_pem(&key.verifying_key())?)?;
    let public = key.verifying_key();
    println!("wrote {} (private: keep it offline)", key_path.display());
    println!("wrote {}", pub_path.display());
    println!("key id      {}", KeyId::of(public.as_bytes()));
    println!("public key  {}  (compile into firmware as a root)", hex::encode(public.as_bytes()));
    Ok(())
}

fn release_new(
    root_path: &Path,
    days: u32,
    counters: std::ops::RangeInclusive<u32>,
    prefix: &Path,
    force: bool,
) -> Result<()> {
    if counters.is_empty() {
        bail!("--min-counter {} is above --max-counter {}", counters.start(), counters.end());
    }
    let root = root_key(root_path)?;
    let (key_path, cert_path) = (with_suffix(prefix, ".key.pem"), with_suffix(prefix, ".cert.pem"));
    refuse_overwrite(&[&key_path, &cert_path], force)?;
    let key = generate()?;
    let not_after = unix_now()? + u64::from(days) * 86_400;
    let cert = certify(&root, &key.verifying_key(), not_after, counters.clone())?;
    write_secret(&key_path, &private_key_pem(&key)?)?;
    write_public(&cert_path, &certificate_pem(&cert)?)?;
    println!("wrote {} (private: give it to the backend only)", key_path.display());
    println!("wrote {}", cert_path.display());
    println!("key id      {}", KeyId::of(key.verifying_key().as_bytes()));
    println!("issued by   {}", KeyId::of(root.verifying_key().as_bytes()));
    println!("not after   {} ({days} days)", rfc3339(not_after));
    println!("counters    {}..={}", counters.start(), counters.end());
    Ok(())
}

fn root_key(path: &Path) -> Result<ed25519_dalek::SigningKey> {
    match read_key_file(path)? {
        KeyFile::Private(key) => Ok(key),
        other => bail!(
            "{}: expected the root's private key (PKCS#8 `PRIVATE KEY` PEM), found a {}",
            path.display(),
            kind_name(&other)
        ),
    }
}

fn revoke_keys(root_path: &Path, seq: u32, keys: &[KeyId], out: &Path, force: bool) -> Result<()> {
    if keys.len() > MAX_REVOKED {
        bail!("a list revokes at most {MAX_REVOKED} keys (release keys also expire: leave out the expired ones)");
    }
    let root = root_key(root_path)?;
    refuse_overwrite(&[out], force)?;
    let list = revoke(&root, seq, keys)?;
    std::fs::write(out, &list).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "wrote {} (revocation list {seq}, issued by {})",
        out.display(),
        KeyId::of(root.verifying_key().as_bytes())
    );
    for key in keys {
        println!("revokes     {key}");
    }
    println!("next: mota keys revocation-push {}", out.display());
    Ok(())
}

async fn revocation_push(client: &crate::client::Client, file: &Path, json: bool) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let request = client.request(Method::POST, "/v1/revocations").header("content-type", "application/octet-stream");
    let view = client.send(request.body(bytes)).await.context("uploading the revocation list")?;
    if json {
        crate::output::json(&view);
    } else {
        println!("revocation list {} stored; the backend publishes it to every device", view["seq"]);
    }
    Ok(())
}

async fn revocations(client: &crate::client::Client, json: bool) -> Result<()> {
    let lists = client.get("/v1/revocations", &[]).await.context("reading the revocation lists")?;
    if json {
        crate::output::json(&lists);
        return Ok(());
    }
    for list in lists.as_array().into_iter().flatten() {
        let keys: Vec<&str> = list["revoked"].as_array().into_iter().flatten().filter_map(|k| k.as_str()).collect();
        let published = if list["published_at"].is_null() { "publishing" } else { "published" };
        println!(
            "{}  {published}  {}",
            list["seq"],
            if keys.is_empty() { "(none)".to_owned() } else { keys.join(" ") }
        );
    }
    Ok(())
}

/// What `keys show` reports; also its JSON form.
#[derive(Serialize)]
struct Shown {
    kind: &'static str,
    key_id: String,
    public_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_after: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expired: Option<bool>,
    /// A certificate's range of security counters.
    #[serde(skip_serializing_if = "Option::is_none")]
    counters: Option<[u32; 2]>,
    /// With `--root`: whether the certificate verifies under it, or why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    root_check: Option<String>,
}

fn show(path: &Path, root: Option<&Path>, json: bool) -> Result<()> {
    let file = read_key_file(path)?;
    let shown = match &file {
        KeyFile::Private(key) => public_facts("private_key", &key.verifying_key()),
        KeyFile::Public(key) => public_facts("public_key", key),
        KeyFile::Certificate(bytes) => certificate_facts(bytes, root)?,
    };
    if root.is_some() && !matches!(file, KeyFile::Certificate(_)) {
        bail!("--root only applies to a certificate file");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(());
    }
    println!("kind        {}", shown.kind.replace('_', " "));
    println!("key id      {}", shown.key_id);
    println!("public key  {}", shown.public_key);
    if let Some(issuer) = &shown.issuer {
        println!("issued by   {issuer}");
    }
    if let (Some(not_after), Some(expired)) = (shown.not_after, shown.expired) {
        println!("not after   {}{}", rfc3339(not_after), if expired { " (EXPIRED)" } else { "" });
    }
    if let Some([min, max]) = shown.counters {
        println!("counters    {min}..={max}");
    }
    if let Some(check) = &shown.root_check {
        println!("root check  {check}");
    }
    Ok(())
}

fn public_facts(kind: &'static str, key: &VerifyingKey) -> Shown {
    Shown {
        kind,
        key_id: KeyId::of(key.as_bytes()).to_string(),
        public_key: hex::encode(key.as_bytes()),
        issuer: None,
        not_after: None,
        expired: None,
        counters: None,
        root_check: None,
    }
}

fn certificate_facts(bytes: &[u8], root: Option<&Path>) -> Result<Shown> {
    let cert = KeyCertificate::parse(bytes).context("certificate")?;
    let body = CertBody::parse(cert.body).context("certificate body")?;
    let now = unix_now()?;
    let root_check = match root {
        None => None,
        Some(path) => {
            let root = match read_key_file(path)? {
                KeyFile::Private(key) => key.verifying_key(),
                KeyFile::Public(key) => key,
                KeyFile::Certificate(_) => bail!("{}: expected a root key, found a certificate", path.display()),
            };
            Some(match verify_certificate(&cert, &[root.to_bytes()], Some(now)) {
                Ok(_) => format!("valid under root {}", KeyId::of(root.as_bytes())),
                Err(e) => format!("INVALID: {e}"),
            })
        }
    };
    Ok(Shown {
        kind: "certificate",
        key_id: body.key_id.to_string(),
        public_key: hex::encode(body.public_key),
        issuer: Some(cert.issuer.to_string()),
        not_after: Some(body.not_after),
        expired: Some(now > body.not_after),
        counters: Some([body.min_counter, body.max_counter]),
        root_check,
    })
}

fn read_key_file(path: &Path) -> Result<KeyFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    KeyFile::from_pem(&text).with_context(|| format!("{} is not a mota key or certificate file", path.display()))
}

fn kind_name(file: &KeyFile) -> &'static str {
    match file {
        KeyFile::Private(_) => "private key",
        KeyFile::Public(_) => "public key",
        KeyFile::Certificate(_) => "certificate",
    }
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Checks every target first, so a refusal leaves no half-written key pair behind.
fn refuse_overwrite(paths: &[&Path], force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    for path in paths {
        if path.exists() {
            bail!("{} exists; pass --force to overwrite it or choose another --out", path.display());
        }
    }
    Ok(())
}

fn write_secret(path: &Path, text: &str) -> Result<()> {
    write_secret_file(path, text).with_context(|| format!("writing {}", path.display()))
}

fn write_public(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn unix_now() -> Result<u64> {
    Ok(SystemTime::now().duration_since(UNIX_EPOCH).context("system clock before 1970")?.as_secs())
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// `mota keys server`: what the backend signs with.
async fn server_keys(client: &crate::client::Client, json: bool) -> Result<()> {
    let keys = client.get("/v1/keys", &[]).await.context("reading the backend's keys")?;
    if json {
        crate::output::json(&keys);
        return Ok(());
    }
    let release = &keys["release"];
    let not_after = release["not_after"].as_u64().map(|s| s * 1000).map(serde_json::Value::from).unwrap_or_default();
    crate::output::fields(&[
        ("release key", crate::output::text(&release["key_id"])),
        ("valid until", crate::output::time(&not_after)),
        ("counters", format!("{}..={}", release["min_counter"], release["max_counter"])),
        (
            "kind",
            if release["development"] == true {
                "development key, generated by the backend: never trust it in production firmware".to_owned()
            } else {
                "certified release key".to_owned()
            },
        ),
    ]);
    Ok(())
}
