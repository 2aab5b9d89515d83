//! `vlmflow verify`'s look at the run records: every run that succeeded has an intact record in
//! the cache, and every record in the cache is indexed by the database. With `repair`, a missing
//! record is written again from the database, an unreadable one's ref is removed, and records the
//! database lacks are imported.

use std::collections::HashSet;

use super::build::EngineError;
use super::verify::{Finding, VerifyReport};
use vlmflow_store::cas::{ObjectsChecked, RecordRef};
use vlmflow_store::db::Db;
use vlmflow_store::run_status::RunStatus;
use vlmflow_store::{Cas, Digest};

pub(crate) fn check_records(
    db: &Db,
    cas: &Cas,
    objects: &ObjectsChecked,
    repair: bool,
    report: &mut VerifyReport,
) -> Result<(), EngineError> {
    let refs = cas.record_refs()?;
    report.records_checked = refs.len();
    let mut readable: HashSet<Digest> = HashSet::new();
    let mut unreadable: Vec<RecordRef> = vec![];
    let mut not_indexed: Vec<RecordRef> = vec![];
    for r in &refs {
        let problem = if !objects.held.contains(&r.record) {
            Some("its object is missing".to_string())
        } else if objects.damaged.contains(&r.record) {
            Some("its object is damaged".to_string())
        } else {
            match cas.read_record(&r.record) {
                Ok(record) if record.key == r.key.to_hex() => {
                    if db.run_with_record(&r.record)?.is_none() {
                        not_indexed.push(*r);
                        report.findings.push(Finding::RecordNotIndexed {
                            record: r.record.to_hex(),
                            stage: record.stage,
                        });
                    }
                    None
                }
                Ok(record) => Some(format!("it is filed under key {}", record.key)),
                Err(e) => Some(e.to_string()),
            }
        };
        match problem {
            None => {
                readable.insert(r.record);
            }
            Some(why) => {
                unreadable.push(*r);
                report.findings.push(Finding::UnreadableRecord {
                    record: r.record.to_hex(),
                    why,
                });
            }
        }
    }
    let without_record: Vec<_> = db
        .runs(None, i64::MAX as usize)?
        .into_iter()
        .filter(|run| run.status == RunStatus::Ran)
        .filter(|run| {
            run.record
                .as_deref()
                .and_then(|d| d.parse::<Digest>().ok())
                .is_none_or(|d| !readable.contains(&d))
        })
        .collect();
    report
        .findings
        .extend(without_record.iter().map(|run| Finding::RunWithoutRecord {
            run: run.id,
            stage: run.stage.clone(),
        }));
    if !repair {
        return Ok(());
    }
    for r in &unreadable {
        cas.forget_record(r)?;
        report.repairs.push(format!(
            "removed the ref of unreadable record {}",
            r.record.short()
        ));
    }
    for run in &without_record {
        let record = cas.keep_record(&db.record_of_kept_run(run)?)?;
        db.set_record(run.id, &record)?;
        report.repairs.push(format!(
            "wrote the record of run {} ({})",
            run.id, run.stage
        ));
    }
    if !not_indexed.is_empty() {
        let imported = db.import_records(cas, &not_indexed)?;
        report.repairs.push(format!(
            "added {} run(s) to the database from their records",
            imported.runs
        ));
    }
    Ok(())
}
