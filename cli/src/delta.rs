//! `mota delta`: make and apply patches with the same code the backend and the devices
//! use, to see what an update would cost before rolling it out; and list the patches the
//! backend made.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum DeltaCommand {
    /// Make a patch from BASE to NEW (the smaller of a delta and a full-image patch).
    Make {
        /// The model devices run now.
        base: PathBuf,
        /// The new model.
        new: PathBuf,
        /// Where to write the patch.
        #[arg(short, long)]
        out: PathBuf,
    },
    /// Rebuild NEW from BASE and PATCH, checking both digests.
    Apply {
        /// The model the patch was made from.
        base: PathBuf,
        /// The patch.
        patch: PathBuf,
        /// Where to write the rebuilt model.
        #[arg(short, long)]
        out: PathBuf,
    },
    /// The patches the backend made to a version, from each recent earlier one.
    List {
        /// Model name.
        model: String,
        /// Version.
        version: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

pub async fn run(cmd: DeltaCommand, ctx: &crate::Ctx) -> Result<()> {
    match cmd {
        DeltaCommand::List { model, version } => {
            crate::registry::list_deltas(&ctx.client()?, &model, &version, ctx.json).await?;
        }
        DeltaCommand::Make { base, new, out } => {
            let (old, target) = (read(&base)?, read(&new)?);
            let patch = mota_delta::encode::best(&old, &target);
            std::fs::write(&out, &patch).with_context(|| format!("writing {}", out.display()))?;
            let header = patch.first_chunk::<{ mota_delta::format::HEADER }>().map(mota_delta::format::Header::parse);
            let kind = match header {
                Some(Ok(h)) if h.base_size == 0 => "full image",
                _ => "delta",
            };
            println!(
                "wrote {} ({kind}): {} bytes for a {}-byte model ({:.1} %)",
                out.display(),
                patch.len(),
                target.len(),
                100.0 * patch.len() as f64 / target.len().max(1) as f64
            );
        }
        DeltaCommand::Apply { base, patch, out } => {
            let (old, p) = (read(&base)?, read(&patch)?);
            let target = mota_delta::encode::apply(&old, &p)
                .map_err(|e| anyhow::anyhow!("{}: {e}", patch.display()))
                .context("check that BASE is the model the patch was made from")?;
            std::fs::write(&out, &target).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "wrote {}: {} bytes from a {}-byte patch ({:.1} %), digests verified",
                out.display(),
                target.len(),
                p.len(),
                100.0 * p.len() as f64 / target.len().max(1) as f64
            );
        }
    }
    Ok(())
}
