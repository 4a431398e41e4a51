//! The database file and its schema, versioned by SQLite's `user_version`
//! so a later kiln can migrate what an earlier one wrote, and an earlier
//! one refuses what a later one wrote.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::RecordsError;

/// The schema version this kiln writes.
pub(crate) const VERSION: i64 = 2;

/// Times are nanoseconds since the epoch; paths are the raw bytes of the
/// `OsStr`, so non-UTF-8 paths survive; `position` keeps the steps in the
/// order the runner gave them.
pub(super) const SCHEMA_V1: &str = "
CREATE TABLE runs (
    id         TEXT PRIMARY KEY NOT NULL,
    pipeline   TEXT NOT NULL,
    file       BLOB NOT NULL,
    run_dir    BLOB NOT NULL,
    log_dir    BLOB NOT NULL,
    status     TEXT NOT NULL,
    started    INTEGER NOT NULL,
    ended      INTEGER,
    retry_of   TEXT,
    pid        INTEGER NOT NULL
);
CREATE INDEX runs_by_start ON runs (started);
CREATE INDEX runs_by_status ON runs (status);
CREATE TABLE steps (
    run_id     TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    name       TEXT NOT NULL,
    image      TEXT,
    upstream   TEXT NOT NULL,
    status     TEXT NOT NULL,
    reason     TEXT,
    next_attempt    INTEGER,
    next_attempt_at INTEGER,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE attempts (
    run_id     TEXT NOT NULL,
    step       TEXT NOT NULL,
    number     INTEGER NOT NULL,
    status     TEXT NOT NULL,
    started    INTEGER NOT NULL,
    ended      INTEGER,
    exit_code  INTEGER,
    reason     TEXT,
    log_path   BLOB NOT NULL,
    PRIMARY KEY (run_id, step, number),
    FOREIGN KEY (run_id, step) REFERENCES steps (run_id, name) ON DELETE CASCADE
);
";

/// Version 2: where a Kubernetes run lives (its kubeconfig context, or
/// `NULL` for the current one; its namespace; its orchestrator Job), so
/// `kiln runs` and `kiln logs` can ask the cluster. A run with a row here is
/// a Kubernetes run; one without is local. A table of its own rather than
/// columns of `runs`: version 1's rows stay as they are, and local runs
/// carry no empty cluster columns.
const SCHEMA_V2: &str = "
CREATE TABLE cluster_runs (
    run_id     TEXT PRIMARY KEY NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    context    TEXT,
    namespace  TEXT NOT NULL,
    job        TEXT NOT NULL
);
";

/// Opens (creating) the database at `path`: WAL, so `kiln runs` reads
/// while a running kiln writes; a 5 s busy timeout, so two writers wait
/// for each other instead of failing; then the schema.
pub(crate) fn open(path: &Path) -> Result<Connection, RecordsError> {
    let sql = |source| RecordsError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let mut conn = Connection::open(path).map_err(sql)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
    conn.pragma_update_and_check(None, "journal_mode", "wal", |_| Ok(()))
        .map_err(sql)?;
    conn.pragma_update(None, "synchronous", "normal")
        .map_err(sql)?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(sql)?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// Brings the schema to [`VERSION`] in one immediate transaction, so two
/// kilns opening a new database at once do not both create it.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), RecordsError> {
    let sql = |source| RecordsError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql)?;
    let found: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sql)?;
    if found > VERSION {
        return Err(RecordsError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported: VERSION,
        });
    }
    if found < 1 {
        tx.execute_batch(SCHEMA_V1).map_err(sql)?;
    }
    if found < 2 {
        tx.execute_batch(SCHEMA_V2).map_err(sql)?;
    }
    // Later versions: `if found < 3 { ... }`, each step in order.
    tx.pragma_update(None, "user_version", VERSION)
        .map_err(sql)?;
    tx.commit().map_err(sql)
}
