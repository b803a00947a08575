//! `mota-backend`: the server (default) and its maintenance commands.

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use mota_backend::config::LogFormat;
use mota_backend::tokens::{self, Role};
use mota_backend::{Config, db::Db, run};

#[derive(Parser)]
#[command(version, about = "mota backend: model registry, signing, storage and the ops API")]
struct Cli {
    #[command(flatten)]
    config: Config,
    /// Print the configuration in effect (JSON) and exit.
    #[arg(long)]
    print_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token; it is printed once, alone on the last line, and stored only hashed.
    Create {
        /// What it may do.
        #[arg(long, value_enum)]
        role: Role,
        /// A name to recognise it by.
        #[arg(long, default_value = "cli")]
        name: String,
        /// Expire it this long from now (`12h`, `30d`); default: never (revoke it instead).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
    },
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let command = mota_backend::config::with_file_defaults(Cli::command(), &args)?;
    let cli = Cli::from_arg_matches(&command.get_matches_from(&args))?;
    if cli.print_config {
        println!("{}", serde_json::to_string_pretty(&cli.config)?);
        return Ok(());
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match cli.config.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt().json().with_env_filter(filter).init(),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Migrate => {
                let db = open(&cli.config).await?;
                println!("migrations applied ({:?})", db.engine);
                Ok(())
            }
            Command::Token(TokenCommand::Create { role, name, expires_in }) => {
                let db = open(&cli.config).await?;
                // The clock the backend judges expiry by.
                let now = db.now().await?;
                let expires_at =
                    expires_in.map(|d| now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));
                let token = tokens::create_expiring(&db, &name, role, now, expires_at).await?;
                let until = match expires_in {
                    Some(d) => format!("expires in {}", humantime::format_duration(d)),
                    None => "never expires".to_owned(),
                };
                eprintln!("token {name:?} ({role:?}, {until}); it is not stored, keep it:");
                println!("{token}");
                Ok(())
            }
            Command::Serve => {
                let listener = tokio::net::TcpListener::bind(cli.config.listen)
                    .await
                    .with_context(|| format!("listening on {}", cli.config.listen))?;
                tracing::info!("serving on http://{}", listener.local_addr()?);
                run(cli.config, listener, shutdown_signal()).await?;
                Ok(())
            }
        }
    })
}

/// The database, migrated.
async fn open(config: &Config) -> Result<Db> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating {}", config.data_dir.display()))?;
    let db = Db::connect(&config.database_url()).await?;
    db.migrate().await?;
    Ok(db)
}

/// Ctrl-C or SIGTERM (Kubernetes' stop signal).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}
