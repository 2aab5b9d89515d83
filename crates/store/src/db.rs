//! The provenance database (SQLite): opening it, migrating its schema, and the queries the engine
//! and the CLI share. WAL mode, foreign keys on, schema version in `PRAGMA user_version`.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::run_status::{BuildStatus, RunStatus};
use super::{Digest, Result, StoreError};

/// Migrations, in order: entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("schema.sql"),
    include_str!("schema_2_records.sql"),
    include_str!("schema_3_run_places.sql"),
    include_str!("schema_4_sweeps.sql"),
];

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub struct Db {
    pub conn: Connection,
}

/// A run as recorded. Times are unix seconds.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunRow {
    pub id: i64,
    pub build_id: i64,
    pub stage: String,
    pub kind: String,
    pub impl_version: String,
    pub key: String,
    pub key_material: String,
    pub params: String,
    pub overrides: String,
    pub status: RunStatus,
    pub artifact: Option<String>,
    pub source_run: Option<i64>,
    pub inputs_manifest: Option<String>,
    pub log: Option<String>,
    pub error: Option<String>,
    pub host: String,
    pub device: String,
    pub pid: i64,
    pub started_at: f64,
    pub finished_at: Option<f64>,
    /// The digest of the run's record object (`run_record.rs`), for a run that succeeded.
    pub record: Option<String>,
    /// The Slurm job the run was, if it was one.
    pub job: Option<String>,
    /// For a restore fetched from a remote cache: the remote's URL.
    pub origin: Option<String>,
}

const RUN_COLUMNS: &str = "id, build_id, stage, kind, impl_version, key, key_material, params, overrides, \
     status, artifact, source_run, inputs_manifest, log, error, host, device, pid, started_at, finished_at, \
     record, job, origin";

fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: r.get(0)?,
        build_id: r.get(1)?,
        stage: r.get(2)?,
        kind: r.get(3)?,
        impl_version: r.get(4)?,
        key: r.get(5)?,
        key_material: r.get(6)?,
        params: r.get(7)?,
        overrides: r.get(8)?,
        status: r.get(9)?,
        artifact: r.get(10)?,
        source_run: r.get(11)?,
        inputs_manifest: r.get(12)?,
        log: r.get(13)?,
        error: r.get(14)?,
        host: r.get(15)?,
        device: r.get(16)?,
        pid: r.get(17)?,
        started_at: r.get(18)?,
        finished_at: r.get(19)?,
        record: r.get(20)?,
        job: r.get(21)?,
        origin: r.get(22)?,
    })
}

/// A new run about to start.
pub struct NewRun<'a> {
    pub build_id: i64,
    pub stage: &'a str,
    pub kind: &'a str,
    pub impl_version: &'a str,
    pub key: &'a str,
    pub key_material: &'a str,
    pub params: &'a str,
    pub overrides: &'a str,
    pub host: &'a str,
    pub device: &'a str,
}

/// Everything recorded when a run succeeds, in one transaction.
pub struct Completion<'a> {
    pub run_id: i64,
    pub stage: &'a str,
    pub artifact: &'a Digest,
    pub files: u64,
    pub bytes: u64,
    pub log: Option<&'a Digest>,
    pub inputs_manifest: Option<&'a Digest>,
    pub inputs: &'a [(String, Digest)],
    /// (upstream stage, its artifact, the run that produced it)
    pub upstreams: &'a [(String, Digest, Option<i64>)],
    /// The run's record, stored before this completion (a restore has none of its own).
    pub record: Option<&'a Digest>,
}

pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Db {
    /// Open (creating and migrating) the database at `path`.
    pub fn open(path: &Path) -> Result<Db> {
        let conn = Connection::open(path)?;
        configure(&conn)?;
        let db = Db { conn };
        db.migrate(path)?;
        Ok(db)
    }

    /// Open read-only, for `vlmflow query` and other readers: writes fail.
    pub fn open_read_only(path: &Path) -> Result<Db> {
        if !path.exists() {
            return Err(StoreError::Missing(format!(
                "{} (nothing has been built in this workspace yet)",
                path.display()
            )));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.pragma_update(None, "query_only", true)?;
        Ok(Db { conn })
    }

    fn migrate(&self, path: &Path) -> Result<()> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        if version > SCHEMA_VERSION {
            return Err(StoreError::Other(format!(
                "{} has schema version {version}, newer than this vlmflow understands ({SCHEMA_VERSION}): \
                 upgrade vlmflow",
                path.display()
            )));
        }
        // IMMEDIATE takes the write lock first, so two processes never migrate at once.
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let result = (|| {
            let version: i64 = self
                .conn
                .pragma_query_value(None, "user_version", |r| r.get(0))?;
            for migration in &MIGRATIONS[version as usize..] {
                self.conn.execute_batch(migration)?;
            }
            self.conn
                .pragma_update(None, "user_version", SCHEMA_VERSION)
        })();
        match result {
            Ok(()) => Ok(self.conn.execute_batch("COMMIT")?),
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e.into())
            }
        }
    }

    pub fn begin_build(&self, argv: &[String], host: &str) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO builds (started_at, argv, host, pid) VALUES (?1, ?2, ?3, ?4)",
            params![
                now(),
                serde_json::to_string(argv).unwrap_or_default(),
                host,
                std::process::id()
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish_build(&self, build_id: i64, status: BuildStatus) -> Result<()> {
        self.conn.execute(
            "UPDATE builds SET finished_at = ?1, status = ?2 WHERE id = ?3",
            params![now(), status, build_id],
        )?;
        Ok(())
    }

    /// The keys of the runs left 'running' (by a process that died, when the workspace lock is held).
    pub fn running_keys(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT DISTINCT key FROM runs WHERE status = 'running'")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Runs, builds and sweep trials left 'running' by a process that died: call with the workspace
    /// lock held.
    pub fn mark_interrupted(&self) -> Result<usize> {
        let tx = self.conn.unchecked_transaction()?;
        let n = tx.execute(
            "UPDATE runs SET status = 'interrupted', finished_at = COALESCE(finished_at, ?1),
                 error = COALESCE(error, CASE WHEN job IS NULL
                     THEN 'the vlmflow process ended before the run finished'
                     ELSE 'the vlmflow process ended while Slurm job ' || job ||
                          ' ran; the next build of the stage takes the job over' END)
             WHERE status = 'running'",
            params![now()],
        )?;
        tx.execute(
            "UPDATE builds SET status = 'interrupted' WHERE status = 'running'",
            [],
        )?;
        tx.execute(
            "UPDATE sweep_trials SET status = 'interrupted' WHERE status = 'running'",
            [],
        )?;
        tx.commit()?;
        Ok(n)
    }

    pub fn insert_run(&self, run: &NewRun<'_>) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO runs (build_id, stage, kind, impl_version, key, key_material, params, overrides,
                               status, host, device, pid, started_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'running', ?9, ?10, ?11, ?12)",
            params![
                run.build_id,
                run.stage,
                run.kind,
                run.impl_version,
                run.key,
                run.key_material,
                run.params,
                run.overrides,
                run.host,
                run.device,
                std::process::id(),
                now()
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Record a successful run (or restore) and make it the stage's current state, atomically.
    pub fn complete_run(
        &self,
        c: &Completion<'_>,
        status: RunStatus,
        source_run: Option<i64>,
    ) -> Result<()> {
        self.complete(c, status, source_run, true)
    }

    /// Record a successful run made off the workspace (a sweep's trial): kept in the run-cache,
    /// while the workspace's state stays as it is.
    pub fn complete_detached_run(&self, c: &Completion<'_>) -> Result<()> {
        self.complete(c, RunStatus::Ran, None, false)
    }

    fn complete(
        &self,
        c: &Completion<'_>,
        status: RunStatus,
        source_run: Option<i64>,
        makes_current: bool,
    ) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        let artifact = c.artifact.to_hex();
        tx.execute(
            "INSERT INTO artifacts (digest, files, bytes, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (digest) DO UPDATE SET swept_at = NULL",
            params![artifact, c.files as i64, c.bytes as i64, now()],
        )?;
        tx.execute(
            "UPDATE runs SET status = ?1, artifact = ?2, source_run = ?3, log = COALESCE(?4, log),
                 inputs_manifest = ?5, finished_at = ?6, record = ?7
             WHERE id = ?8",
            params![
                status,
                artifact,
                source_run,
                c.log.map(Digest::to_hex),
                c.inputs_manifest.map(Digest::to_hex),
                now(),
                c.record.map(Digest::to_hex),
                c.run_id
            ],
        )?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO run_inputs (run_id, path, digest) VALUES (?1, ?2, ?3)",
            )?;
            for (path, digest) in c.inputs {
                ins.execute(params![c.run_id, path, digest.to_hex()])?;
            }
            let mut up = tx.prepare_cached(
                "INSERT INTO run_upstreams (run_id, stage, artifact, producer_run_id) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (stage, digest, producer) in c.upstreams {
                up.execute(params![c.run_id, stage, digest.to_hex(), producer])?;
            }
        }
        if makes_current {
            tx.execute(
                "INSERT INTO stage_state (stage, run_id) VALUES (?1, ?2)
                 ON CONFLICT (stage) DO UPDATE SET run_id = excluded.run_id",
                params![c.stage, c.run_id],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Record a run that failed or was interrupted.
    pub fn fail_run(
        &self,
        run_id: i64,
        status: RunStatus,
        error: &str,
        log: Option<&Digest>,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET status = ?1, error = ?2, log = COALESCE(?3, log), finished_at = ?4 WHERE id = ?5",
            params![status, error, log.map(Digest::to_hex), now(), run_id],
        )?;
        Ok(())
    }

    /// Record that the run is the Slurm job `job`, and, once known, the node it runs on.
    pub fn set_run_job(&self, run_id: i64, job: &str, node: Option<&str>) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET job = ?1, host = COALESCE(?2, host) WHERE id = ?3",
            params![job, node, run_id],
        )?;
        Ok(())
    }

    /// Record that the restore `run_id` fetched its artifact from the remote at `url`.
    pub fn set_run_origin(&self, run_id: i64, url: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET origin = ?1 WHERE id = ?2",
            params![url, run_id],
        )?;
        Ok(())
    }

    /// Name the run's record (written again by `vlmflow verify --repair`).
    pub fn set_record(&self, run_id: i64, record: &Digest) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET record = ?1 WHERE id = ?2",
            params![record.to_hex(), run_id],
        )?;
        Ok(())
    }

    /// Whether the run-cache still offers the artifact (known and not swept).
    pub fn artifact_kept(&self, artifact: &Digest) -> Result<bool> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM artifacts WHERE digest = ?1 AND swept_at IS NULL)",
            [artifact.to_hex()],
            |r| r.get(0),
        )?)
    }

    /// Take an artifact out of the run-cache (its objects are gone or damaged).
    pub fn mark_swept(&self, artifact: &Digest) -> Result<()> {
        self.conn.execute(
            "UPDATE artifacts SET swept_at = ?1 WHERE digest = ?2",
            params![now(), artifact.to_hex()],
        )?;
        Ok(())
    }

    pub fn insert_metrics(
        &self,
        run_id: i64,
        metrics: &[(String, Option<i64>, f64)],
    ) -> Result<()> {
        if metrics.is_empty() {
            return Ok(());
        }
        let tx = self.conn.unchecked_transaction()?;
        self.write_metrics(run_id, metrics)?;
        tx.commit()?;
        Ok(())
    }

    /// `insert_metrics` inside the caller's transaction.
    pub(crate) fn write_metrics(
        &self,
        run_id: i64,
        metrics: &[(String, Option<i64>, f64)],
    ) -> Result<()> {
        let mut ins = self.conn.prepare_cached(
            "INSERT INTO metrics (run_id, name, step, value) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (name, step, value) in metrics {
            ins.execute(params![run_id, name, step, value])?;
        }
        Ok(())
    }

    /// Every metric the run recorded, in the order written.
    pub fn metrics_of(&self, run_id: i64) -> Result<Vec<(String, Option<i64>, f64)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, step, value FROM metrics WHERE run_id = ?1 ORDER BY rowid",
        )?;
        let rows = stmt.query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn run(&self, id: i64) -> Result<Option<RunRow>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1");
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row([id], run_from_row)
            .optional()?)
    }

    /// The run whose artifact the workspace holds for `stage`.
    pub fn current_run(&self, stage: &str) -> Result<Option<RunRow>> {
        let sql = format!(
            "SELECT {} FROM stage_state s JOIN runs r ON r.id = s.run_id WHERE s.stage = ?1",
            prefixed_columns("r")
        );
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row([stage], run_from_row)
            .optional()?)
    }

    /// The run-cache: the newest successful run with this key whose artifact is still stored.
    pub fn cached_run(&self, key: &str) -> Result<Option<RunRow>> {
        let sql = format!(
            "SELECT {} FROM runs r JOIN artifacts a ON a.digest = r.artifact
             WHERE r.key = ?1 AND r.status = 'ran' AND a.swept_at IS NULL
             ORDER BY r.id DESC LIMIT 1",
            prefixed_columns("r")
        );
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row([key], run_from_row)
            .optional()?)
    }

    /// Runs, newest first, optionally of one stage.
    pub fn runs(&self, stage: Option<&str>, limit: usize) -> Result<Vec<RunRow>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE (?1 IS NULL OR stage = ?1) ORDER BY id DESC LIMIT ?2"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![stage, limit as i64], run_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The run of the same stage just before `run`.
    pub fn previous_run(&self, run: &RunRow) -> Result<Option<RunRow>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE stage = ?1 AND id < ?2 ORDER BY id DESC LIMIT 1"
        );
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row(params![run.stage, run.id], run_from_row)
            .optional()?)
    }

    /// The first run that produced `artifact` (status 'ran').
    pub fn producer_of(&self, artifact: &str) -> Result<Option<RunRow>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE artifact = ?1 AND status = 'ran' ORDER BY id LIMIT 1"
        );
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row([artifact], run_from_row)
            .optional()?)
    }

    /// Final metrics (step NULL) or, for series, their last value; of the run that computed them.
    pub fn final_metrics(&self, run_id: i64) -> Result<Vec<(String, f64)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, value FROM metrics m
             WHERE run_id = ?1 AND (step IS NULL OR (step = (SELECT MAX(step) FROM metrics
                 WHERE run_id = m.run_id AND name = m.name)
                 AND NOT EXISTS (SELECT 1 FROM metrics WHERE run_id = m.run_id AND name = m.name AND step IS NULL)))
             ORDER BY name",
        )?;
        let rows = stmt.query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn inputs_of(&self, run_id: i64) -> Result<Vec<(String, String)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT path, digest FROM run_inputs WHERE run_id = ?1 ORDER BY path",
        )?;
        let rows = stmt.query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// (upstream stage, artifact, producer run) edges of a run.
    pub fn upstreams_of(&self, run_id: i64) -> Result<Vec<(String, String, Option<i64>)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT stage, artifact, producer_run_id FROM run_upstreams WHERE run_id = ?1 ORDER BY stage",
        )?;
        let rows = stmt.query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

fn prefixed_columns(alias: &str) -> String {
    RUN_COLUMNS
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(Duration::from_secs(60))?;
    // WAL: readers never block the writer; NORMAL sync keeps every commit atomic (a crash loses at
    // most the last commits, never consistency) without an fsync per transaction.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // Checkpointing on every close would fsync and delete the WAL at the end of each command, even
    // a no-op build; SQLite's automatic checkpoint (every ~1000 pages) is enough.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )?;
    Ok(())
}

#[cfg(test)]
#[path = "db_tests.rs"]
mod tests;
