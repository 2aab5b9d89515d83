//! Rebuilding the run database from the run records: when `cache/vlmflow.db` is lost or damaged,
//! every kept run comes back from its record, so the run-cache, the metrics and the lineage
//! survive it. Builds, restores and failed runs have no records and are not brought back.

use rusqlite::{OptionalExtension, params};

use super::cas::RecordRef;
use super::db::{Db, now};
use super::run_record::RunRecord;
use super::{Cas, Digest, Result};

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Imported {
    /// Runs added to the database.
    pub runs: usize,
    /// Of their artifacts, those the cache no longer holds whole: their stages will run again.
    pub artifacts_gone: usize,
    /// Records that could not be read, with why.
    pub unreadable: Vec<(RecordRef, String)>,
}

impl Db {
    /// Adds every record in `refs` that the database does not index yet, oldest first, in one
    /// transaction; safe to run twice or from two processes at once.
    pub fn import_records(&self, cas: &Cas, refs: &[RecordRef]) -> Result<Imported> {
        let mut imported = Imported::default();
        let mut records = Vec::new();
        for r in refs {
            match cas.read_record(&r.record) {
                Ok(record) => records.push((r.record, record)),
                Err(e) => imported.unreadable.push((*r, e.to_string())),
            }
        }
        records.sort_by(|(_, a), (_, b)| a.finished_at.total_cmp(&b.finished_at));

        // IMMEDIATE: a second process importing at once waits, then finds the records indexed.
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let result = (|| {
            let mut build_id = None;
            for (digest, record) in &records {
                if self.run_with_record(digest)?.is_some() {
                    continue;
                }
                let build = match build_id {
                    Some(id) => id,
                    None => *build_id.insert(self.import_build()?),
                };
                if !self.insert_recorded_artifact(
                    cas,
                    &record.artifact,
                    record.files,
                    record.bytes,
                )? {
                    imported.artifacts_gone += 1;
                }
                self.insert_recorded_run(build, digest, record, cas)?;
                imported.runs += 1;
            }
            Ok(())
        })();
        match result {
            Ok(()) => self.conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
        Ok(imported)
    }

    /// The id of the run that names `record`.
    pub fn run_with_record(&self, record: &Digest) -> Result<Option<i64>> {
        Ok(self
            .conn
            .prepare_cached("SELECT id FROM runs WHERE record = ?1 LIMIT 1")?
            .query_row([record.to_hex()], |r| r.get(0))
            .optional()?)
    }

    /// The build the imported runs belong to.
    fn import_build(&self) -> Result<i64> {
        let t = now();
        self.conn.execute(
            "INSERT INTO builds (started_at, finished_at, argv, host, pid, status)
             VALUES (?1, ?1, ?2, ?3, ?4, 'ok')",
            params![
                t,
                r#"["vlmflow", "(runs imported from their records in cache/runs/)"]"#,
                "",
                std::process::id()
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Adds the artifact unless indexed; returns whether the cache holds it whole (its manifest
    /// and every object it names). One that is not is marked swept, so its stage runs again.
    fn insert_recorded_artifact(
        &self,
        cas: &Cas,
        artifact: &Digest,
        files: u64,
        bytes: u64,
    ) -> Result<bool> {
        // Indexed already (an upstream of several runs): its members are not stat'ed again.
        let indexed: Option<bool> = self
            .conn
            .query_row(
                "SELECT swept_at IS NULL FROM artifacts WHERE digest = ?1",
                [artifact.to_hex()],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(kept) = indexed {
            return Ok(kept);
        }
        let whole = match cas.read_manifest(artifact) {
            Ok(manifest) => manifest.objects().try_fold(true, |all, object| {
                Ok::<_, crate::StoreError>(all && cas.holds(&object)?)
            })?,
            Err(_) => false,
        };
        let t = now();
        self.conn.execute(
            "INSERT INTO artifacts (digest, files, bytes, created_at, swept_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![artifact.to_hex(), files as i64, bytes as i64, t, (!whole).then_some(t)],
        )?;
        Ok(whole)
    }

    fn insert_recorded_run(
        &self,
        build_id: i64,
        digest: &Digest,
        record: &RunRecord,
        cas: &Cas,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO runs (build_id, stage, kind, impl_version, key, key_material, params, overrides,
                               status, artifact, inputs_manifest, log, host, device, pid, started_at,
                               finished_at, record, job)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'ran', ?9, ?10, ?11, ?12, ?13, 0, ?14, ?15, ?16,
                     ?17)",
            params![
                build_id,
                record.stage,
                record.kind,
                record.impl_version,
                record.key,
                record.key_material,
                record.params,
                record.overrides,
                record.artifact.to_hex(),
                record.inputs_manifest.map(|d| d.to_hex()),
                record.log.map(|d| d.to_hex()),
                record.host,
                record.device,
                record.started_at,
                record.finished_at,
                digest.to_hex(),
                record.job,
            ],
        )?;
        let run_id = self.conn.last_insert_rowid();
        let mut input = self
            .conn
            .prepare_cached("INSERT INTO run_inputs (run_id, path, digest) VALUES (?1, ?2, ?3)")?;
        for (path, d) in &record.inputs {
            input.execute(params![run_id, path, d.to_hex()])?;
        }
        for up in &record.upstreams {
            // The producer's record was imported before this one (it finished first), if it exists.
            let producer = match &up.producer {
                Some(p) => self.run_with_record(p)?,
                None => None,
            };
            self.insert_recorded_artifact(cas, &up.artifact, 0, 0)?;
            self.conn.execute(
                "INSERT INTO run_upstreams (run_id, stage, artifact, producer_run_id) VALUES (?1, ?2, ?3, ?4)",
                params![run_id, up.stage, up.artifact.to_hex(), producer],
            )?;
        }
        self.write_metrics(run_id, &record.metrics)
    }
}

#[cfg(test)]
#[path = "index_rebuild_tests.rs"]
mod tests;
