//! `mota login` and `mota whoami`: check a server and a token before saving them, so a
//! typo is caught now rather than on the next command.

use anyhow::{Context, Result};

use crate::Ctx;
use crate::client::ConfigFile;
use crate::output;

/// `mota login`.
#[derive(clap::Args)]
pub struct LoginArgs {
    /// Save without checking that the server accepts the token.
    #[arg(long)]
    no_check: bool,
}

/// Checks the connection given by flags, environment or file, and saves it to the file.
pub async fn login(args: LoginArgs, ctx: &Ctx) -> Result<()> {
    let client = ctx.connection.client_for_login()?;
    let Some(token) = client.token() else {
        anyhow::bail!("give the token to save with --token or MOTA_TOKEN");
    };
    if !args.no_check {
        client.get("/v1/whoami", &[]).await.context("checking the token")?;
    }
    let path = ctx.connection.config_path().context("no config file location: set --config or HOME")?;
    save(&path, &ConfigFile { server: Some(client.base().to_owned()), token: Some(token.to_owned()) })?;
    println!("saved {} for {}", path.display(), client.base());
    Ok(())
}

fn save(path: &std::path::Path, config: &ConfigFile) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = toml::to_string(config).context("encoding the config file")?;
    // The token is a secret: readable by its owner only, as the key files are.
    mota_proto::keys::write_secret_file(path, &text).with_context(|| format!("writing {}", path.display()))
}

/// `mota whoami`.
pub async fn whoami(ctx: &Ctx) -> Result<()> {
    let client = ctx.client()?;
    let me = client.get("/v1/whoami", &[]).await.context("asking the backend who the token is")?;
    if ctx.json {
        output::json(&me);
    } else {
        output::fields(&[("server", client.base().to_owned()), ("role", output::text(&me["role"]))]);
    }
    Ok(())
}
