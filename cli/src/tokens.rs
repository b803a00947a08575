//! `mota token`: API tokens (admin only). A new token's secret is printed once, alone on
//! the last line, so `T=$(mota token create ... | tail -1)` works in scripts.
//!
//! A token may expire (`--expires-in 30d`, `--expires-at 2027-01-31T00:00:00Z`): the CLI
//! sends the backend the absolute time, and past it the backend refuses the token with
//! `token_expired`. `mota token list` shows each token's expiry and when it was last used
//! (to the minute: the backend records a use at most once a minute).

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
    /// Create a token; its secret is shown once. Without --expires-in or --expires-at it
    /// never expires (revoke it when it is no longer needed).
    Create {
        /// A name to recognise it by.
        name: String,
        /// What it may do.
        #[arg(long, value_enum, default_value = "operator")]
        role: Role,
        /// Expire it this long from now: `90m`, `12h`, `30d`, `2weeks`, `1y`.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "expires_at")]
        expires_in: Option<std::time::Duration>,
        /// Expire it at this time: RFC 3339 (`2027-01-31T18:00:00Z`, `2027-01-31T19:00:00+01:00`)
        /// or a date (`2027-01-31`, midnight UTC).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        expires_at: Option<std::time::SystemTime>,
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
                        time(&t["expires_at"]),
                        time(&t["last_used_at"]),
                        time(&t["revoked_at"]),
                    ]
                })
                .collect();
            output::table(&["id", "name", "role", "created", "expires", "last used", "revoked"], rows, "no tokens");
        }
        TokenCommand::Create { name, role, expires_in, expires_at } => {
            let role = match role {
                Role::Viewer => "viewer",
                Role::Operator => "operator",
                Role::Admin => "admin",
            };
            let expires = match (expires_in, expires_at) {
                (Some(d), _) => Some(std::time::SystemTime::now() + d),
                (None, at) => at,
            };
            let mut body = json!({ "name": name, "role": role });
            if let Some(at) = expires {
                body["expires_at"] = json!(unix_ms(at)?);
            }
            let token = client.json(Method::POST, "/v1/tokens", &body).await.context("creating the token")?;
            if ctx.json {
                output::json(&token);
            } else {
                let until = match expires {
                    Some(_) => format!("expires {}", time(&token["expires_at"])),
                    None => "never expires".to_owned(),
                };
                eprintln!("created token {} ({name}, {role}, {until}); its secret is shown once:", text(&token["id"]));
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

fn unix_ms(t: std::time::SystemTime) -> Result<u64> {
    let ms = t.duration_since(std::time::UNIX_EPOCH).context("the expiry is before 1970")?.as_millis();
    u64::try_from(ms).context("the expiry is too far away")
}

/// `--expires-in`: a positive duration (`30d`, `12h`, `2weeks`).
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (for example `90m`, `12h`, `30d`)"))?;
    if d.is_zero() {
        return Err("the token would expire at once".into());
    }
    Ok(d)
}

/// `--expires-at`: RFC 3339 with `Z` or a `+HH:MM`/`-HH:MM` offset, or a date (midnight
/// UTC).
fn parse_time(s: &str) -> Result<std::time::SystemTime, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not an RFC 3339 time (`2027-01-31T18:00:00Z`) or a date (`2027-01-31`)");
    if s.len() == 10 {
        return humantime::parse_rfc3339(&format!("{s}T00:00:00Z")).map_err(|_| bad());
    }
    // humantime reads UTC only: take a numeric offset off and apply it.
    let (local, offset_s) = match s.len().checked_sub(6).and_then(|i| Some((i, s.get(i..)?))) {
        Some((i, tail)) if (tail.starts_with('+') || tail.starts_with('-')) && tail.as_bytes()[3] == b':' => {
            let hours: u64 = tail[1..3].parse().map_err(|_| bad())?;
            let minutes: u64 = tail[4..].parse().map_err(|_| bad())?;
            let sign = if tail.starts_with('-') { -1 } else { 1 };
            (format!("{}Z", &s[..i]), sign * (hours * 3600 + minutes * 60) as i64)
        }
        _ => (s.to_owned(), 0),
    };
    if !local.contains('T') && !local.contains(' ') {
        return Err(bad());
    }
    let t = humantime::parse_rfc3339_weak(&local).map_err(|_| bad())?;
    // Local time = UTC + offset, so UTC = local time - offset.
    let utc = if offset_s >= 0 {
        t.checked_sub(std::time::Duration::from_secs(offset_s as u64))
    } else {
        t.checked_add(std::time::Duration::from_secs(offset_s.unsigned_abs()))
    };
    utc.ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn expiry_times_read_as_ops_write_them() {
        let at = |s: &str| parse_time(s).map(|t| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
        assert_eq!(at("2027-01-31T18:00:00Z"), Ok(1_801_418_400));
        assert_eq!(at("2027-01-31T19:00:00+01:00"), Ok(1_801_418_400));
        assert_eq!(at("2027-01-31T13:30:00-04:30"), Ok(1_801_418_400));
        assert_eq!(at("2027-01-31"), Ok(1_801_353_600));
        for bad in ["tomorrow", "2027-13-01", "2027-01-31T25:00:00Z", "1801245600", ""] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert!(parse_duration("0s").is_err() && parse_duration("soon").is_err() && parse_duration("-1d").is_err());
    }
}
