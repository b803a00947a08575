//! `mota device`: the fleet as the backend knows it (from each device's `hello` and
//! reports), its update history, and the tags rollouts select by.

use anyhow::{Context, Result};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use crate::Ctx;
use crate::client::segment;
use crate::output::{self, age, permille, text, time};

#[derive(Subcommand)]
pub enum DeviceCommand {
    /// Devices, filtered.
    List {
        /// Only this device class.
        #[arg(long)]
        class: Option<String>,
        /// Only devices with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Only devices running this model.
        #[arg(long)]
        model: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// One device: what it runs, when it was seen, its tags.
    Show {
        /// Device id.
        id: String,
    },
    /// The rollouts that reached a device and how each went, newest first.
    History {
        /// Device id.
        id: String,
    },
    /// Provision a device: fix its class and issue its MQTT credentials (printed once:
    /// username = client id = device id, and a password). It can be tagged and selected
    /// by rollouts before it first connects.
    #[command(alias = "add")]
    Provision {
        /// Device id (`[A-Za-z0-9._-]`, at most 64 bytes).
        id: String,
        /// Device class, fixed from now on.
        #[arg(long)]
        class: String,
        /// Tags to give it.
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// Issue a device new MQTT credentials (printed once; the old password stops
    /// working). Provisions a device that registered itself by its hello.
    Credentials {
        /// Device id.
        id: String,
    },
    /// Add tags to a device.
    Tag {
        /// Device id.
        id: String,
        /// Tags (`[A-Za-z0-9._-]`).
        #[arg(required = true)]
        tags: Vec<String>,
    },
    /// Remove tags from a device.
    Untag {
        /// Device id.
        id: String,
        /// Tags.
        #[arg(required = true)]
        tags: Vec<String>,
    },
}

pub async fn run(cmd: DeviceCommand, ctx: &Ctx) -> Result<()> {
    let client = ctx.client()?;
    match cmd {
        DeviceCommand::List { class, tag, model, limit } => {
            let mut query = Vec::new();
            query.extend(class.map(|c| ("class", c)));
            query.extend(tag.map(|t| ("tag", t)));
            query.extend(model.map(|m| ("model", m)));
            let devices = client.all("/v1/devices", &query, limit).await.context("listing devices")?;
            if ctx.json {
                output::json(&Value::Array(devices));
                return Ok(());
            }
            let rows = devices.iter().map(row).collect();
            output::table(&["id", "class", "model", "version", "online", "last seen", "tags"], rows, "no devices");
        }
        DeviceCommand::Show { id } => {
            let d = client.get(&format!("/v1/devices/{}", segment(&id)), &[]).await.context("showing the device")?;
            if ctx.json {
                output::json(&d);
                return Ok(());
            }
            output::fields(&[
                ("id", text(&d["id"])),
                ("class", text(&d["device_class"])),
                ("agent", text(&d["agent_version"])),
                ("online", yes_no(&d["online"])),
                ("model", format!("{} {}", text(&d["running_model"]), text(&d["running_version"]))),
                ("image", text(&d["running_sha256"])),
                ("counter", text(&d["security_counter"])),
                ("tags", text(&d["tags"])),
                ("first seen", time(&d["first_seen"])),
                ("last seen", format!("{} ({})", time(&d["last_seen"]), age(&d["last_seen"]))),
            ]);
        }
        DeviceCommand::History { id } => {
            let path = format!("/v1/devices/{}/updates", segment(&id));
            let updates = client.all(&path, &[], usize::MAX).await.context("reading the device's history")?;
            if ctx.json {
                output::json(&Value::Array(updates));
                return Ok(());
            }
            let rows = updates
                .iter()
                .map(|u| {
                    vec![
                        text(&u["rollout_id"]),
                        format!("{} {}", text(&u["model"]), text(&u["version"])),
                        text(&u["state"]),
                        match u["delta"].as_bool() {
                            Some(true) => "patch".into(),
                            Some(false) => "full".into(),
                            None => "-".into(),
                        },
                        permille(&u["accuracy_permille"]),
                        permille(&u["prev_accuracy_permille"]),
                        output::error(u),
                        time(&u["offered_at"]),
                    ]
                })
                .collect();
            output::table(
                &["rollout", "model", "state", "sent", "accuracy", "before", "error", "offered"],
                rows,
                "no rollout has reached this device",
            );
        }
        DeviceCommand::Provision { id, class, tags } => {
            let p = client
                .json(Method::POST, "/v1/devices", &json!({ "id": id, "device_class": class, "tags": tags }))
                .await
                .context("provisioning the device")?;
            print_credentials(&p, "provisioned", ctx.json);
        }
        DeviceCommand::Credentials { id } => {
            let path = format!("/v1/devices/{}/credentials", segment(&id));
            let p = client.send(client.request(Method::POST, &path)).await.context("issuing credentials")?;
            print_credentials(&p, "new credentials for", ctx.json);
        }
        DeviceCommand::Tag { id, tags } => change_tags(&client, Method::PUT, &id, &tags, ctx.json).await?,
        DeviceCommand::Untag { id, tags } => change_tags(&client, Method::DELETE, &id, &tags, ctx.json).await?,
    }
    Ok(())
}

/// A provisioning answer: the document as is (`--json`), or the device and its login.
fn print_credentials(p: &Value, what: &str, json: bool) {
    if json {
        output::json(p);
        return;
    }
    let (d, mqtt) = (&p["device"], &p["mqtt"]);
    println!("{what} {} ({})", text(&d["id"]), text(&d["device_class"]));
    println!("mqtt username: {}  (also its client id)", text(&mqtt["username"]));
    println!("mqtt password: {}", text(&mqtt["password"]));
    println!("the password is shown only now: store it on the device (Mosquitto: --json has the dynsec command)");
}

async fn change_tags(
    client: &crate::client::Client,
    method: Method,
    id: &str,
    tags: &[String],
    json: bool,
) -> Result<()> {
    let mut device = Value::Null;
    for tag in tags {
        let path = format!("/v1/devices/{}/tags/{}", segment(id), segment(tag));
        device = client.send(client.request(method.clone(), &path)).await.with_context(|| format!("tag {tag}"))?;
    }
    if json {
        output::json(&device);
    } else {
        println!("{id}: tags {}", text(&device["tags"]));
    }
    Ok(())
}

fn yes_no(v: &Value) -> String {
    if v.as_bool() == Some(true) { "yes" } else { "no" }.to_owned()
}

fn row(d: &Value) -> Vec<String> {
    vec![
        text(&d["id"]),
        text(&d["device_class"]),
        text(&d["running_model"]),
        text(&d["running_version"]),
        yes_no(&d["online"]),
        age(&d["last_seen"]),
        text(&d["tags"]),
    ]
}
