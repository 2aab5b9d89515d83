//! Run records in the cache: each is an object, and an empty file `cache/runs/<key>/<record
//! digest>` (a ref) says that it is one, so rebuilding the database finds every record without
//! reading every object. A key may have several records (the same stage run again after its
//! artifact was swept).

use std::fs;
use std::io;

use super::Cas;
use crate::files::{create_with, fsync_path};
use crate::run_record::RunRecord;
use crate::{Digest, Result, StoreError, io_err};

/// Names a record: the key of its run and the record object's digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordRef {
    pub key: Digest,
    pub record: Digest,
}

impl Cas {
    /// Stores the record and its ref, both durable when this returns.
    pub fn keep_record(&self, record: &RunRecord) -> Result<Digest> {
        let key: Digest = record.key.parse().map_err(|e| {
            StoreError::Other(format!("run record of stage `{}`: {e}", record.stage))
        })?;
        let digest = self.put_bytes(&record.to_bytes())?;
        self.add_record_ref(&RecordRef {
            key,
            record: digest,
        })?;
        Ok(digest)
    }

    /// Names an object the cache holds as a record of its key (one fetched from a remote).
    pub fn add_record_ref(&self, r: &RecordRef) -> Result<()> {
        let dir = self.runs.join(r.key.to_hex());
        let new_dir = !dir.is_dir();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let path = dir.join(r.record.to_hex());
        match create_with(&path, 0o444, |f| f.sync_all()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(io_err(path)(e)),
        }
        fsync_path(&dir)?;
        if new_dir {
            fsync_path(&self.runs)?;
        }
        Ok(())
    }

    /// The record, checked against its digest.
    pub fn read_record(&self, digest: &Digest) -> Result<RunRecord> {
        RunRecord::from_bytes(&self.read_bytes(digest)?)
            .map_err(|e| StoreError::Other(format!("cache object {digest}: {e}")))
    }

    /// Every record's ref, sorted. Names that are not digests (a stray file) are left out.
    pub fn record_refs(&self) -> Result<Vec<RecordRef>> {
        let mut refs = Vec::new();
        for key_dir in read_dir_or_empty(&self.runs)? {
            if let Ok(key) = key_dir.file_name().to_string_lossy().parse::<Digest>() {
                refs.extend(self.record_refs_of(&key)?);
            }
        }
        refs.sort();
        Ok(refs)
    }

    /// The refs of the records of one key.
    pub fn record_refs_of(&self, key: &Digest) -> Result<Vec<RecordRef>> {
        let dir = self.runs.join(key.to_hex());
        Ok(read_dir_or_empty(&dir)?
            .iter()
            .filter_map(|entry| entry.file_name().to_string_lossy().parse::<Digest>().ok())
            .map(|record| RecordRef { key: *key, record })
            .collect())
    }

    /// Whether any record is kept (reads one folder entry, not all of them).
    pub fn holds_records(&self) -> bool {
        fs::read_dir(&self.runs).is_ok_and(|mut rd| rd.next().is_some())
    }

    /// Removes a ref (its record is unreadable); nothing there is fine.
    pub fn forget_record(&self, r: &RecordRef) -> Result<()> {
        let path = self.runs.join(r.key.to_hex()).join(r.record.to_hex());
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(path)(e)),
            _ => Ok(()),
        }
    }
}

fn read_dir_or_empty(dir: &std::path::Path) -> Result<Vec<fs::DirEntry>> {
    match fs::read_dir(dir) {
        Ok(rd) => rd.collect::<io::Result<Vec<_>>>().map_err(io_err(dir)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(io_err(dir)(e)),
    }
}
