//! The remote half of `mota model`, `mota valset` and `mota delta`: pushing versions and
//! sets to the backend's registry and reading it back.
//!
//! A push streams the file with a progress bar on stderr (hidden when stderr is not a
//! terminal, so scripts and CI logs stay clean). The backend checks the model with the
//! device runtime before storing anything, so its refusal (an unsupported operator, an
//! arena too big, an accuracy rule that cannot hold) is printed as it says it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Body, Method};
use serde_json::Value;

use crate::client::{Client, segment};
use crate::output::{self, bytes, permille, text, time};

/// `mota model push`.
#[derive(clap::Args)]
pub struct PushArgs {
    /// The .tflite file.
    pub file: PathBuf,
    /// Model name (default: the file name without extension).
    #[arg(long)]
    pub model: Option<String>,
    /// Version string, unique per model (`1.4.0`).
    #[arg(long)]
    pub version: String,
    /// Device class; required for a model's first version.
    #[arg(long)]
    pub device_class: Option<String>,
    /// A validation set file to upload with it (from `mota valset make`).
    #[arg(long, conflicts_with = "valset_sha256")]
    pub valset: Option<PathBuf>,
    /// A validation set pushed before, by digest.
    #[arg(long)]
    pub valset_sha256: Option<String>,
    /// Lowest accuracy devices accept, ‰ (default: what the backend measures).
    #[arg(long)]
    pub min_accuracy_permille: Option<u16>,
    /// Largest drop below the model a device runs, ‰ (default: off).
    #[arg(long)]
    pub max_drop_permille: Option<u16>,
    /// Raise the model's security counter with this version. Devices that commit it then
    /// refuse every version with a lower counter, rollback to them included: for a
    /// release that fixes a security problem of the older ones. Without it the version
    /// keeps the counter of the one before, and devices may roll back to those.
    #[arg(long)]
    pub raise_counter: bool,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// A request body that advances `bar` as the HTTP client takes it.
fn progress_body(data: Vec<u8>, bar: &ProgressBar) -> Body {
    const PIECE: usize = 64 * 1024;
    let bar = bar.clone();
    let pieces: Vec<Vec<u8>> = data.chunks(PIECE).map(<[u8]>::to_vec).collect();
    Body::wrap_stream(futures_util::stream::iter(pieces).map(move |piece| {
        bar.inc(piece.len() as u64);
        Ok::<_, std::io::Error>(piece)
    }))
}

fn bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// What a version is pushed with, besides its image.
#[derive(Default)]
pub struct Upload {
    /// `(name, query value)` pairs: version, device class, rule, set digest.
    pub query: Vec<(&'static str, String)>,
    /// A validation set file to send along: its name and bytes.
    pub set: Option<(String, Vec<u8>)>,
}

/// Uploads `image` as a version of `model`, with a progress bar; the version document.
pub async fn upload(
    client: &Client,
    model: &str,
    image: Vec<u8>,
    upload: Upload,
) -> Result<Value, crate::client::ApiError> {
    let version = upload.query.iter().find(|(k, _)| *k == "version").map(|(_, v)| v.as_str()).unwrap_or("");
    let total = image.len() as u64 + upload.set.as_ref().map_or(0, |(_, s)| s.len() as u64);
    let progress = bar(total, &format!("pushing {model} {version}"));
    let path = format!("/v1/models/{}/versions", segment(model));
    let request = client.request(Method::POST, &path).query(&upload.query);
    let request = match upload.set {
        None => request
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(progress_body(image, &progress)),
        Some((name, set)) => {
            let (model_len, set_len) = (image.len() as u64, set.len() as u64);
            let form = reqwest::multipart::Form::new()
                .part(
                    "model",
                    reqwest::multipart::Part::stream_with_length(progress_body(image, &progress), model_len)
                        .file_name(format!("{model}.tflite")),
                )
                .part(
                    "validation_set_file",
                    reqwest::multipart::Part::stream_with_length(progress_body(set, &progress), set_len)
                        .file_name(name),
                );
            request.multipart(form)
        }
    };
    let result = client.send(request).await;
    progress.finish_and_clear();
    result
}

/// `mota model push`.
pub async fn push(client: &Client, args: PushArgs, json: bool) -> Result<()> {
    let image = read(&args.file)?;
    let model = match args.model {
        Some(m) => m,
        None => args.file.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned(),
    };
    let mut query = vec![("version", args.version.clone())];
    query.extend(args.device_class.map(|c| ("device_class", c)));
    query.extend(args.valset_sha256.map(|s| ("validation_set", s)));
    query.extend(args.min_accuracy_permille.map(|p| ("min_accuracy_permille", p.to_string())));
    query.extend(args.max_drop_permille.map(|p| ("max_drop_permille", p.to_string())));
    if args.raise_counter {
        query.push(("raise_counter", "true".to_owned()));
    }
    let set = match &args.valset {
        Some(path) => {
            let name = path.file_name().and_then(|s| s.to_str()).unwrap_or("validation set").to_owned();
            Some((name, read(path)?))
        }
        None => None,
    };
    let version = upload(client, &model, image, Upload { query, set })
        .await
        .with_context(|| format!("pushing {} as {model} {}", args.file.display(), args.version))?;
    if json {
        output::json(&version);
    } else {
        println!(
            "pushed {model} {} (counter {}, {}, accuracy {} on its validation set)",
            text(&version["version"]),
            text(&version["security_counter"]),
            bytes(&version["image_size"]),
            permille(&version["accuracy_permille"]),
        );
        if args.raise_counter {
            println!(
                "raised the security counter to {}: devices that commit {} refuse every version with a lower one, \
                 rollback included",
                text(&version["security_counter"]),
                args.version
            );
        }
        println!(
            "deltas from earlier versions are computed in the background: `mota model show {model} {}`",
            args.version
        );
    }
    Ok(())
}

/// `mota model list`.
pub async fn list_models(client: &Client, json: bool) -> Result<()> {
    let models = client.all("/v1/models", &[], usize::MAX).await.context("listing models")?;
    if json {
        output::json(&Value::Array(models));
        return Ok(());
    }
    let rows = models
        .iter()
        .map(|m| {
            vec![
                text(&m["name"]),
                text(&m["device_class"]),
                text(&m["versions"]),
                text(&m["security_counter"]),
                time(&m["created_at"]),
            ]
        })
        .collect();
    output::table(&["name", "class", "versions", "counter", "created"], rows, "no models yet: `mota model push`");
    Ok(())
}

/// `mota model show MODEL [VERSION]`.
pub async fn show(client: &Client, model: &str, version: Option<&str>, json: bool) -> Result<()> {
    let Some(version) = version else {
        let m = client.get(&format!("/v1/models/{}", segment(model)), &[]).await.context("showing the model")?;
        let versions = client
            .all(&format!("/v1/models/{}/versions", segment(model)), &[], usize::MAX)
            .await
            .context("listing its versions")?;
        if json {
            output::json(&serde_json::json!({ "model": m, "versions": versions }));
            return Ok(());
        }
        output::fields(&[
            ("model", text(&m["name"])),
            ("class", text(&m["device_class"])),
            ("counter", text(&m["security_counter"])),
        ]);
        println!();
        let rows = versions
            .iter()
            .map(|v| {
                vec![
                    text(&v["version"]),
                    text(&v["security_counter"]),
                    raised(&v["raised_counter"]),
                    bytes(&v["image_size"]),
                    bytes(&v["arena_bytes"]),
                    permille(&v["accuracy_permille"]),
                    time(&v["created_at"]),
                ]
            })
            .collect();
        output::table(&["version", "counter", "raised", "size", "arena", "accuracy", "created"], rows, "no versions");
        return Ok(());
    };
    let v = fetch_version(client, model, version).await?;
    if json {
        output::json(&v);
        return Ok(());
    }
    output::fields(&[
        ("model", text(&v["model"])),
        ("version", text(&v["version"])),
        ("counter", text(&v["security_counter"])),
        ("raised counter", raised(&v["raised_counter"])),
        ("image", format!("{} ({})", text(&v["image_sha256"]), bytes(&v["image_size"]))),
        ("arena", bytes(&v["arena_bytes"])),
        ("operators", text(&v["ops"])),
        ("validation set", text(&v["validation_set_sha256"])),
        ("accuracy", permille(&v["accuracy_permille"])),
        ("min accuracy", permille(&v["min_accuracy_permille"])),
        ("max drop", permille(&v["max_drop_permille"])),
        ("created", time(&v["created_at"])),
    ]);
    println!();
    print_deltas(&v);
    Ok(())
}

/// Whether a version raised its model's security counter, for people.
fn raised(v: &Value) -> String {
    match v.as_bool() {
        Some(true) => "yes".to_owned(),
        Some(false) => "no".to_owned(),
        None => "-".to_owned(),
    }
}

pub async fn fetch_version(client: &Client, model: &str, version: &str) -> Result<Value> {
    client
        .get(&format!("/v1/models/{}/versions/{}", segment(model), segment(version)), &[])
        .await
        .with_context(|| format!("showing {model} {version}"))
}

fn print_deltas(v: &Value) {
    let size = v["image_size"].as_f64().unwrap_or(0.0);
    let rows = v["deltas"]
        .as_array()
        .map(|ds| {
            ds.iter()
                .map(|d| {
                    let ratio = d["patch_size"]
                        .as_f64()
                        .filter(|_| size > 0.0)
                        .map_or_else(|| "-".to_owned(), |p| format!("{:.1} %", 100.0 * p / size));
                    vec![text(&d["base_version"]), text(&d["state"]), bytes(&d["patch_size"]), ratio]
                })
                .collect()
        })
        .unwrap_or_default();
    output::table(
        &["from", "state", "patch", "of the image"],
        rows,
        "no deltas (the first version of a model has none)",
    );
}

/// `mota delta list MODEL VERSION`.
pub async fn list_deltas(client: &Client, model: &str, version: &str, json: bool) -> Result<()> {
    let v = fetch_version(client, model, version).await?;
    if json {
        output::json(&v["deltas"]);
    } else {
        print_deltas(&v);
    }
    Ok(())
}

/// `mota valset push FILE`.
pub async fn push_set(client: &Client, file: &Path, json: bool) -> Result<()> {
    let data = read(file)?;
    let name = file.file_name().and_then(|s| s.to_str()).unwrap_or("validation set").to_owned();
    let progress = bar(data.len() as u64, &format!("pushing {name}"));
    let request = client
        .request(Method::POST, "/v1/validation-sets")
        .query(&[("name", &name)])
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(progress_body(data, &progress));
    let result = client.send(request).await;
    progress.finish_and_clear();
    let set = result.with_context(|| format!("pushing {}", file.display()))?;
    if json {
        output::json(&set);
    } else {
        println!(
            "pushed {name}: {} records, sha256 {} (name it with `mota model push --valset-sha256 {}`)",
            text(&set["records"]),
            text(&set["sha256"]),
            text(&set["sha256"])
        );
    }
    Ok(())
}

/// `mota valset list`.
pub async fn list_sets(client: &Client, json: bool) -> Result<()> {
    let sets = client.all("/v1/validation-sets", &[], usize::MAX).await.context("listing validation sets")?;
    if json {
        output::json(&Value::Array(sets));
        return Ok(());
    }
    let rows = sets
        .iter()
        .map(|s| {
            vec![
                text(&s["sha256"]).chars().take(16).collect(),
                text(&s["name"]),
                text(&s["records"]),
                format!("{} {}", text(&s["input_type"]), text(&s["input_shape"])),
                text(&s["expectation"]),
                time(&s["created_at"]),
            ]
        })
        .collect();
    output::table(&["sha256", "name", "records", "input", "expects", "created"], rows, "no validation sets");
    Ok(())
}
