//! `mota token`: API tokens (admin only). A new token's secret is printed once, alone on
//! the last line, so `T=$(mota token create ... | tail -1)` works in scripts.

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{Value, json};

use crate::Ctx;
use crate::client::ApiError;
use crate::output::{self, text, time};

#[derive(Clone, Copy, ValueEnum)]
pub enum Role {
    /// Read everything.
    Viewer,
    /// Read, push models, drive rollouts.
    Operator,
    /// Everything, tokens included.
    Admin,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Tokens, revoked ones included.
    List,
    /// Create a token; its secret is shown once.
    Create {
        /// A name to recognise it by.
        name: String,
        /// What it may do.
        #[arg(long, value_enum, default_value = "operator")]
        role: Role,
    },
    /// Revoke a token by id: it stops working at once.
    Revoke {
        /// Token id (from `mota token list`).
        id: i64,
    },
}

pub async fn run(cmd: TokenCommand, ctx: &Ctx) -> Result<()> {
    let client = ctx.client()?;
    match cmd {
        TokenCommand::List => {
            // A plain list, not a page: there are few tokens.
            let tokens = match client.get("/v1/tokens", &[]).await.context("listing tokens")? {
                Value::Array(tokens) => tokens,
                _ => {
                    let url = format!("{}/v1/tokens", client.base());
                    return Err(ApiError::Protocol { url, detail: "not a list".into() }).context("listing tokens");
                }
            };
            if ctx.json {
                output::json(&Value::Array(tokens));
                return Ok(());
            }
            let rows = tokens
                .iter()
                .map(|t| {
                    vec![
                        text(&t["id"]),
                        text(&t["name"]),
                        text(&t["role"]),
                        time(&t["created_at"]),
                        time(&t["revoked_at"]),
                    ]
                })
                .collect();
            output::table(&["id", "name", "role", "created", "revoked"], rows, "no tokens");
        }
        TokenCommand::Create { name, role } => {
            let role = match role {
                Role::Viewer => "viewer",
                Role::Operator => "operator",
                Role::Admin => "admin",
            };
            let token = client
                .json(Method::POST, "/v1/tokens", &json!({ "name": name, "role": role }))
                .await
                .context("creating the token")?;
            if ctx.json {
                output::json(&token);
            } else {
                eprintln!("created token {} ({name}, {role}); its secret is shown once:", text(&token["id"]));
                println!("{}", text(&token["secret"]));
            }
        }
        TokenCommand::Revoke { id } => {
            let token = client
                .send(client.request(Method::DELETE, &format!("/v1/tokens/{id}")))
                .await
                .context("revoking the token")?;
            if ctx.json {
                output::json(&token);
            } else {
                println!("revoked token {id}");
            }
        }
    }
    Ok(())
}
