//! Who may do what: `mota token create/list/revoke`, `mota whoami`, `mota login` and the
//! config file it writes (and what overrides it), and the exit codes and hints of every
//! kind of refusal; `mota completions`.

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

use crate::support::{Env, TestResult, arg, fixture};

const NOWHERE: &str = "http://127.0.0.1:1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_manages_tokens_and_each_refusal_has_its_exit_code_and_hint() -> TestResult {
    let env = Env::start(0).await?;
    let admin = env.stack.token_for("admin").await?;
    let admin = Some(admin.as_str());

    // A new token: its secret alone on the last line, working at once.
    let created = env.mota_as(admin, &["token", "create", "ci", "--role", "viewer"]).await;
    assert_eq!(created.code, 0, "{created:?}");
    assert!(created.stderr.contains("(ci, viewer, never expires); its secret is shown once"), "{created:?}");
    let secret = created.stdout.lines().last().ok_or("no secret")?.to_owned();
    assert!(!secret.is_empty() && !secret.contains(' '), "{created:?}");
    let viewer = Some(secret.as_str());
    let me = env.mota_as(viewer, &["--json", "whoami"]).await;
    assert_eq!(me.code, 0, "{me:?}");
    assert_eq!(me.json()["role"], "viewer");
    let me = env.mota_as(viewer, &["whoami"]).await;
    assert!(me.stdout.lines().any(|l| l.starts_with("server") && l.ends_with(env.stack.url())), "{me:?}");
    assert!(me.stdout.lines().any(|l| l.starts_with("role") && l.ends_with("viewer")), "{me:?}");
    let made = env.mota_as(admin, &["--json", "token", "create", "deployer"]).await;
    assert_eq!(made.code, 0, "{made:?}");
    let made = made.json();
    assert_eq!(made["role"], "operator", "operator by default: {made}");
    assert!(made["secret"].as_str().is_some_and(|s| !s.is_empty()), "{made}");

    // Listed (admin only), without secrets.
    let listed = env.mota_as(admin, &["--json", "token", "list"]).await;
    assert_eq!(listed.code, 0, "{listed:?}");
    let tokens = listed.json();
    let ci = tokens.as_array().ok_or("not a list")?.iter().find(|t| t["name"] == "ci").ok_or("no ci token")?.clone();
    assert_eq!(ci["role"], "viewer");
    assert_eq!(ci["revoked_at"], Value::Null);
    assert!(!listed.stdout.contains(&secret), "secrets are never listed");
    let id = ci["id"].as_i64().ok_or("no id")?.to_string();
    let table = env.mota_as(admin, &["token", "list"]).await;
    assert_eq!(table.code, 0, "{table:?}");
    assert!(table.stdout.starts_with("ID"), "{table:?}");
    let row: Vec<&str> = table
        .stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("ci"))
        .ok_or("no ci row")?
        .split_whitespace()
        .collect();
    // id, name, role, created, expires, last used, revoked: used (whoami), never expires.
    assert_eq!((row[0], row[2], row[4], row[6]), (id.as_str(), "viewer", "-", "-"), "{table:?}");
    assert!(row[5].starts_with("20"), "its last use is shown: {table:?}");
    assert!(table.stdout.lines().next().is_some_and(|h| h.contains("EXPIRES") && h.contains("LAST USED")), "{table:?}");

    // An expiring token: the CLI sends the time, the list shows it.
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    let short =
        env.mota_as(admin, &["--json", "token", "create", "short", "--role", "viewer", "--expires-in", "1h"]).await;
    assert_eq!(short.code, 0, "{short:?}");
    let expires = short.json()["expires_at"].as_i64().ok_or("no expires_at")?;
    assert!((before + 3_600_000..before + 3_660_000).contains(&expires), "{short:?}");
    let at = env.mota_as(admin, &["token", "create", "dated", "--expires-at", "2099-01-31T19:00:00+01:00"]).await;
    assert_eq!(at.code, 0, "{at:?}");
    assert!(at.stderr.contains("expires 2099-01-31T18:00:00Z"), "{at:?}");
    let past = env.mota_as(admin, &["token", "create", "old", "--expires-at", "2001-01-01"]).await;
    assert!(past.code != 0 && past.stderr.contains("expires_at is not in the future"), "{past:?}");
    let both = env.mota_as(admin, &["token", "create", "x", "--expires-in", "1h", "--expires-at", "2099-01-01"]).await;
    assert_eq!(both.code, 2, "{both:?}");
    let listed = env.mota_as(admin, &["--json", "token", "list"]).await.json();
    let short = listed.as_array().and_then(|l| l.iter().find(|t| t["name"] == "short")).ok_or("no short token")?;
    assert_eq!((short["expires_at"].as_i64(), &short["last_used_at"]), (Some(expires), &Value::Null), "{listed}");
    let operator = env.mota(&["token", "list"]).await;
    assert_eq!(operator.code, 4, "{operator:?}");
    assert!(operator.stderr.contains("HTTP 403") && operator.stderr.contains("admin for tokens"), "{operator:?}");

    // A viewer may read but not push (403: 4), and nothing is stored.
    let v1 = fixture("digits_cnn_v1.tflite");
    let push =
        env.mota_as(viewer, &["model", "push", &arg(&v1), "--version", "1.0.0", "--device-class", "cortex-m4"]).await;
    assert_eq!(push.code, 4, "{push:?}");
    assert!(
        push.stderr.contains("HTTP 403") && push.stderr.contains("hint: this token's role may not do that"),
        "{push:?}"
    );
    let models = env.mota_as(viewer, &["--json", "model", "list"]).await;
    assert_eq!((models.code, models.json()), (0, Value::Array(vec![])), "{models:?}");

    // Revoked: it stops working at once; revoking again changes nothing.
    let revoked = env.mota_as(admin, &["token", "revoke", &id]).await;
    assert_eq!((revoked.code, revoked.stdout.trim()), (0, format!("revoked token {id}").as_str()), "{revoked:?}");
    let after = env.mota_as(viewer, &["whoami"]).await;
    assert_eq!(after.code, 4, "{after:?}");
    assert!(after.stderr.contains("HTTP 401"), "{after:?}");
    let again = env.mota_as(admin, &["--json", "token", "revoke", &id]).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.json()["revoked_at"].is_i64(), "{again:?}");
    let tokens = env.mota_as(admin, &["--json", "token", "list"]).await.json();
    let ci = tokens.as_array().ok_or("not a list")?.iter().find(|t| t["name"] == "ci").ok_or("no ci token")?.clone();
    assert_eq!(ci["revoked_at"], again.json()["revoked_at"], "{tokens}");
    assert_eq!(env.mota_as(admin, &["token", "revoke", "9999"]).await.code, 3);

    // No token: 4, with the way to get one.
    let anonymous = env.mota_as(None, &["model", "list"]).await;
    assert_eq!(anonymous.code, 4, "{anonymous:?}");
    assert!(anonymous.stderr.contains("HTTP 401"), "{anonymous:?}");
    assert!(anonymous.stderr.contains("`mota-backend token create --role operator`"), "{anonymous:?}");

    // Not found: 3; unreachable: 6; not a URL the CLI speaks: 1.
    let missing = env.mota(&["device", "show", "no-such-device"]).await;
    assert_eq!(missing.code, 3, "{missing:?}");
    assert!(
        missing.stderr.contains("HTTP 404") && missing.stderr.contains("hint: check the name or id"),
        "{missing:?}"
    );
    let down = env.mota(&["--server", NOWHERE, "device", "list"]).await;
    assert_eq!(down.code, 6, "{down:?}");
    assert!(down.stderr.contains(&format!("cannot reach the backend at {NOWHERE}")), "{down:?}");
    assert!(down.stderr.contains("hint: start it"), "{down:?}");
    let ftp = env.mota(&["--server", "ftp://example.com", "model", "list"]).await;
    assert_eq!(ftp.code, 1, "{ftp:?}");
    assert!(ftp.stderr.contains("--server must be an http:// or https:// URL"), "{ftp:?}");
    assert_eq!(env.mota(&["device"]).await.code, 2, "a usage error");

    let completions = env.mota_as(None, &["completions", "bash"]).await;
    assert_eq!(completions.code, 0, "{completions:?}");
    assert!(completions.stdout.contains("_mota()") && completions.stdout.contains("rollout"), "{completions:?}");
    env.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_checks_and_saves_the_connection_that_later_commands_use() -> TestResult {
    let env = Env::start(0).await?;
    let url = env.stack.url().to_owned();
    let config = env.home.path().join(".config/mota/config.toml");

    // A token the server refuses is not saved, nor a server that does not answer.
    let refused = env.mota_as(Some("not-a-token"), &["login"]).await;
    assert_eq!(refused.code, 4, "{refused:?}");
    assert!(!config.exists(), "nothing saved for a refused token");
    let down = env.mota_with(&[("MOTA_SERVER", NOWHERE), ("MOTA_TOKEN", env.stack.token())], &["login"]).await;
    assert_eq!(down.code, 6, "{down:?}");
    assert!(!config.exists(), "nothing saved for an unreachable server");
    let tokenless = env.mota_as(None, &["login"]).await;
    assert_eq!(tokenless.code, 1, "{tokenless:?}");
    assert!(tokenless.stderr.contains("give the token to save with --token or MOTA_TOKEN"), "{tokenless:?}");

    // Saved, for its owner only.
    let saved = env.mota_as(Some(env.stack.token()), &["login"]).await;
    assert_eq!(saved.code, 0, "{saved:?}");
    assert_eq!(saved.stdout.trim(), format!("saved {} for {url}", config.display()));
    assert_eq!(std::fs::metadata(&config)?.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&config)?;
    assert!(text.contains(&url) && text.contains(env.stack.token()), "{text}");

    // Later commands need neither MOTA_SERVER nor MOTA_TOKEN.
    let me = env.mota_with(&[], &["--json", "whoami"]).await;
    assert_eq!(me.code, 0, "{me:?}");
    assert_eq!(me.json()["role"], "operator");
    let me = env.mota_with(&[], &["whoami"]).await;
    assert!(me.stdout.lines().any(|l| l.starts_with("server") && l.ends_with(&url)), "{me:?}");
    let listed = env.mota_with(&[], &["device", "list"]).await;
    assert_eq!((listed.code, listed.stdout.trim()), (0, "no devices"), "{listed:?}");

    // The environment overrides the file, and flags the environment.
    let env_server = env.mota_with(&[("MOTA_SERVER", NOWHERE)], &["whoami"]).await;
    assert_eq!(env_server.code, 6, "MOTA_SERVER beats the file: {env_server:?}");
    let env_token = env.mota_with(&[("MOTA_TOKEN", "not-a-token")], &["whoami"]).await;
    assert_eq!(env_token.code, 4, "MOTA_TOKEN beats the file: {env_token:?}");
    let flags = env
        .mota_with(
            &[("MOTA_SERVER", NOWHERE), ("MOTA_TOKEN", "not-a-token")],
            &["--server", &url, "--token", env.stack.token(), "whoami"],
        )
        .await;
    assert_eq!(flags.code, 0, "flags beat the environment: {flags:?}");
    // With a token from the environment only, the server still comes from the file.
    let viewer = env.stack.token_for("viewer").await?;
    let mixed = env.mota_with(&[("MOTA_TOKEN", &viewer)], &["--json", "whoami"]).await;
    assert_eq!(mixed.code, 0, "{mixed:?}");
    assert_eq!(mixed.json()["role"], "viewer");

    // --no-check saves without asking the server; --config / MOTA_CONFIG name another file,
    // which need not exist yet.
    let other = env.home.path().join("other/mota.toml");
    let unchecked = env
        .mota_with(
            &[("MOTA_SERVER", NOWHERE), ("MOTA_TOKEN", "later")],
            &["login", "--no-check", "--config", &arg(&other)],
        )
        .await;
    assert_eq!(unchecked.code, 0, "{unchecked:?}");
    assert_eq!(unchecked.stdout.trim(), format!("saved {} for {NOWHERE}", other.display()));
    assert_eq!(std::fs::metadata(&other)?.permissions().mode() & 0o777, 0o600);
    let via_flag = env.mota_with(&[], &["--config", &arg(&other), "whoami"]).await;
    assert_eq!(via_flag.code, 6, "the other file's server: {via_flag:?}");
    let via_env = env.mota_with(&[("MOTA_CONFIG", &arg(&other))], &["whoami"]).await;
    assert_eq!(via_env.code, 6, "the other file's server: {via_env:?}");
    let checked = env.home.path().join("checked.toml");
    let login = env.mota_as(Some(env.stack.token()), &["login", "--config", &arg(&checked)]).await;
    assert_eq!(login.code, 0, "a new file at a named path: {login:?}");
    assert_eq!(env.mota_with(&[("MOTA_CONFIG", &arg(&checked))], &["whoami"]).await.code, 0);
    let absent = env.mota_with(&[], &["--config", &arg(&env.home.path().join("absent.toml")), "whoami"]).await;
    assert_eq!(absent.code, 1, "a named config file that does not exist: {absent:?}");
    assert!(absent.stderr.contains("reading the config file"), "{absent:?}");
    env.stop().await
}
