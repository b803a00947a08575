//! The database: one pool over SQLite or PostgreSQL (sqlx's `Any` driver, so every query
//! is written once), migrated from `migrations/<engine>` at start-up.

use sqlx::AnyPool;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;

static SQLITE: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("../migrations/postgres");

/// Why the database is unusable.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL names an engine we do not run on.
    #[error("unsupported database URL (use sqlite:// or postgres://): {0}")]
    Engine(String),
    /// Connecting failed.
    #[error("connecting to the database: {0}")]
    Connect(#[source] sqlx::Error),
    /// A migration failed.
    #[error("migrating the database: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The migration lock could not be taken.
    #[error("locking the database for migration: {0}")]
    Lock(String),
    /// A query failed.
    #[error("database: {0}")]
    Query(#[from] sqlx::Error),
}

/// Which engine a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The embedded default.
    Sqlite,
    /// Production.
    Postgres,
}

impl Engine {
    /// The engine of `url`.
    pub fn of(url: &str) -> Result<Self, DbError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Self::Postgres)
        } else {
            Err(DbError::Engine(url.split(':').next().unwrap_or_default().to_owned()))
        }
    }
}

/// The pool and its engine.
#[derive(Debug, Clone)]
pub struct Db {
    /// Connections.
    pub pool: AnyPool,
    /// The engine behind them.
    pub engine: Engine,
    /// The SQLite file, if the database is one.
    sqlite_file: Option<std::path::PathBuf>,
    /// Where the control plane's time comes from.
    clock: Clock,
}

/// Where the rollout control plane reads the time: one clock for every replica.
#[derive(Debug, Clone)]
pub enum Clock {
    /// This process' clock (SQLite: one machine, so one clock).
    System,
    /// The database server's clock (PostgreSQL): replicas on machines whose clocks
    /// disagree still judge timeouts, leases and soak times by the same one. Read as
    /// this process' clock plus the offset to the server's, measured again every
    /// [`OFFSET_TTL`] (a query per report batch cost the ingest a statement).
    Database(std::sync::Arc<std::sync::Mutex<Option<(std::time::Instant, i64)>>>),
    /// A clock a test sets (and jumps).
    Manual(std::sync::Arc<std::sync::atomic::AtomicI64>),
}

impl Db {
    /// Connects to `url` (creating a SQLite file if needed).
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        let engine = Engine::of(url)?;
        install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(if engine == Engine::Sqlite { 4 } else { 16 })
            .connect(url)
            .await
            .map_err(DbError::Connect)?;
        let sqlite_file = (engine == Engine::Sqlite)
            .then(|| url.trim_start_matches("sqlite:").trim_start_matches("//").split('?').next().unwrap_or_default())
            .filter(|path| !path.is_empty() && !path.starts_with(":memory:"))
            .map(std::path::PathBuf::from);
        let clock = if engine == Engine::Postgres { Clock::Database(Default::default()) } else { Clock::System };
        let db = Self { pool, engine, sqlite_file, clock };
        if engine == Engine::Sqlite {
            // Write-ahead log: readers run while a write commits, and a commit costs one
            // fsync of the log instead of four (rollback journal, its directory, again,
            // the database): 21 % off an upload on disk (BENCHMARKS.md). The mode is
            // stored in the file; in-memory databases keep theirs. Switching needs an
            // exclusive lock for which SQLite may answer "locked" at once instead of
            // waiting, so processes opening one file switch it one at a time.
            let _lock = db.file_lock().await?;
            sqlx::query("PRAGMA journal_mode = WAL").fetch_optional(&db.pool).await.map_err(DbError::Connect)?;
        }
        Ok(db)
    }

    /// Applies the engine's migrations that are not applied yet. Replicas starting
    /// together migrate once: sqlx holds an advisory lock on PostgreSQL, but takes none
    /// on SQLite, so there the file lock serializes processes sharing the file.
    pub async fn migrate(&self) -> Result<(), DbError> {
        let migrator = match self.engine {
            Engine::Sqlite => &SQLITE,
            Engine::Postgres => &POSTGRES,
        };
        let _lock = self.file_lock().await?;
        migrator.run(&self.pool).await.map_err(DbError::Migrate)
    }

    /// An exclusive lock on `<file>.migrate-lock` for a SQLite file (none otherwise),
    /// held until the returned file is dropped.
    async fn file_lock(&self) -> Result<Option<std::fs::File>, DbError> {
        let Some(file) = &self.sqlite_file else { return Ok(None) };
        let mut path = file.clone().into_os_string();
        path.push(".migrate-lock");
        let lock = tokio::task::spawn_blocking(move || {
            let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
            f.lock()?;
            Ok::<_, std::io::Error>(f)
        });
        Ok(Some(lock.await.map_err(|e| DbError::Lock(e.to_string()))?.map_err(|e| DbError::Lock(e.to_string()))?))
    }

    /// Begins a transaction that will write. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`): a deferred transaction that reads and then writes fails with
    /// "database is locked", without waiting, when another connection committed in
    /// between (its read snapshot is stale); taking the lock first makes it wait its turn
    /// (the busy timeout) instead. PostgreSQL's row locks need nothing of the kind.
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.engine {
            Engine::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Engine::Postgres => self.pool.begin().await,
        }
    }

    /// The same database read through `clock` (tests drive time by hand).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Now, in Unix milliseconds, by the control plane's clock.
    pub async fn now(&self) -> Result<i64, sqlx::Error> {
        match &self.clock {
            Clock::System => Ok(now_ms()),
            Clock::Database(offset) => {
                let cached = *offset.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some((_, offset)) = cached.filter(|(at, _)| at.elapsed() < OFFSET_TTL) {
                    return Ok(now_ms() + offset);
                }
                let before = now_ms();
                let server: i64 =
                    sqlx::query_scalar("SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)")
                        .fetch_one(&self.pool)
                        .await?;
                let after = now_ms();
                // The server read its clock about halfway through the round trip.
                let measured = server - (before + after) / 2;
                *offset.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some((std::time::Instant::now(), measured));
                Ok(after + measured)
            }
            Clock::Manual(t) => Ok(t.load(std::sync::atomic::Ordering::SeqCst)),
        }
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// How long a measured offset to the database server's clock is used.
pub const OFFSET_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// Now, in Unix milliseconds (the schema's time unit).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transaction that reads, then writes after another connection committed, still
    /// commits (with a deferred `BEGIN` SQLite refuses it at once: "database is locked").
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_then_write_transaction_survives_a_concurrent_writer() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let db = Db::connect(&format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display())).await?;
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)").execute(&db.pool).await?;
        sqlx::query("INSERT INTO t (id, n) VALUES (1, 0)").execute(&db.pool).await?;

        let mut first = db.begin().await?;
        let n: i64 = sqlx::query_scalar("SELECT n FROM t WHERE id = 1").fetch_one(&mut *first).await?;
        let other = db.clone();
        let second = tokio::spawn(async move {
            let mut tx = other.begin().await?;
            sqlx::query("UPDATE t SET n = n + 10 WHERE id = 1").execute(&mut *tx).await?;
            tx.commit().await
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        sqlx::query("UPDATE t SET n = $1 WHERE id = 1").bind(n + 1).execute(&mut *first).await?;
        first.commit().await?;
        second.await??;
        let n: i64 = sqlx::query_scalar("SELECT n FROM t WHERE id = 1").fetch_one(&db.pool).await?;
        assert_eq!(n, 11, "both writes kept, one after the other");
        Ok(())
    }
}
