//! Sweeps in the provenance database (schema 4): a named group of trials, each an assignment of
//! params, and the runs each trial's stages ended with.

use rusqlite::{OptionalExtension, params};

use super::Result;
use super::db::{Db, now};
use super::run_status::BuildStatus;

/// A sweep as recorded.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SweepRow {
    pub id: i64,
    pub name: String,
    pub build_id: i64,
    /// The stages each trial built (JSON array).
    pub targets: String,
    /// The specs it was started with (JSON array).
    pub axes: String,
    pub created_at: f64,
}

/// One trial of a sweep.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TrialRow {
    pub trial: i64,
    /// `"stage.param"` → value (a JSON object).
    pub assignment: String,
    pub status: BuildStatus,
    /// The first stage that did not build, and why.
    pub error: Option<String>,
    /// (stage, run) of each stage the trial built, by stage name.
    pub runs: Vec<(String, i64)>,
}

impl Db {
    /// Record a new sweep; `None` when one of that name exists.
    pub fn insert_sweep(
        &self,
        name: &str,
        build_id: i64,
        targets: &str,
        axes: &str,
    ) -> Result<Option<i64>> {
        let inserted = self.conn.execute(
            "INSERT INTO sweeps (name, build_id, targets, axes, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO NOTHING",
            params![name, build_id, targets, axes, now()],
        )?;
        Ok((inserted == 1).then(|| self.conn.last_insert_rowid()))
    }

    /// The number the next sweep would get (for its default name).
    pub fn next_sweep_number(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM sweeps", [], |r| {
                r.get(0)
            })?)
    }

    pub fn insert_trial(&self, sweep_id: i64, trial: i64, assignment: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO sweep_trials (sweep_id, trial, assignment) VALUES (?1, ?2, ?3)",
            params![sweep_id, trial, assignment],
        )?;
        Ok(())
    }

    /// A trial's end: its status, why it failed, and the run that made each stage's artifact.
    pub fn finish_trial(
        &self,
        sweep_id: i64,
        trial: i64,
        status: BuildStatus,
        error: Option<&str>,
        runs: &[(String, i64)],
    ) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "UPDATE sweep_trials SET status = ?1, error = ?2 WHERE sweep_id = ?3 AND trial = ?4",
            params![status, error, sweep_id, trial],
        )?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT OR REPLACE INTO sweep_runs (sweep_id, trial, stage, run_id)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (stage, run_id) in runs {
                ins.execute(params![sweep_id, trial, stage, run_id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// (run, its artifact) of every trial of the newest `n` sweeps.
    pub fn runs_of_newest_sweeps(&self, n: usize) -> Result<Vec<(i64, Option<String>)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT r.id, r.artifact FROM sweep_runs s JOIN runs r ON r.id = s.run_id
             WHERE s.sweep_id IN (SELECT id FROM sweeps ORDER BY id DESC LIMIT ?1)",
        )?;
        let rows = stmt.query_map([n as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every sweep, newest first. A database of an older schema (opened read-only, so not
    /// migrated) has none.
    pub fn sweeps(&self) -> Result<Vec<SweepRow>> {
        let known: bool = self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sweeps')",
            [],
            |r| r.get(0),
        )?;
        if !known {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, name, build_id, targets, axes, created_at FROM sweeps ORDER BY id DESC",
        )?;
        let rows = stmt.query_map([], sweep_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn sweep(&self, name: &str) -> Result<Option<SweepRow>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT id, name, build_id, targets, axes, created_at FROM sweeps WHERE name = ?1",
            )?
            .query_row([name], sweep_from_row)
            .optional()?)
    }

    /// A sweep's trials in order, each with its runs.
    pub fn trials(&self, sweep_id: i64) -> Result<Vec<TrialRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT trial, assignment, status, error FROM sweep_trials WHERE sweep_id = ?1
             ORDER BY trial",
        )?;
        let mut trials: Vec<TrialRow> = stmt
            .query_map([sweep_id], |r| {
                Ok(TrialRow {
                    trial: r.get(0)?,
                    assignment: r.get(1)?,
                    status: r.get(2)?,
                    error: r.get(3)?,
                    runs: Vec::new(),
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut runs = self.conn.prepare_cached(
            "SELECT trial, stage, run_id FROM sweep_runs WHERE sweep_id = ?1 ORDER BY trial, stage",
        )?;
        let rows = runs.query_map([sweep_id], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get(2)?))
        })?;
        for row in rows {
            let (trial, stage, run_id) = row?;
            if let Some(t) = trials.iter_mut().find(|t| t.trial == trial) {
                t.runs.push((stage, run_id));
            }
        }
        Ok(trials)
    }
}

fn sweep_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SweepRow> {
    Ok(SweepRow {
        id: r.get(0)?,
        name: r.get(1)?,
        build_id: r.get(2)?,
        targets: r.get(3)?,
        axes: r.get(4)?,
        created_at: r.get(5)?,
    })
}
