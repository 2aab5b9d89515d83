//! Metrics as TensorBoard event files, so that `tensorboard --logdir cache/tensorboard` shows any
//! workspace's curves. A run's folder is `cache/tensorboard/<stage>/run-<id>`, one event file in
//! it, written as the run records its metrics.
//!
//! The format, written here rather than through a protobuf toolchain: a file is TFRecords, each
//! `length (u64 LE) · masked CRC-32C of the length · payload · masked CRC-32C of the payload`,
//! whose payloads are `Event` protobufs — the first says `file_version: "brain.Event:2"`, each
//! other holds a wall time, a step and a `Summary` of `simple_value` scalars. A metric's dots
//! become slashes in its tag (`train.loss` → `train/loss`), which TensorBoard groups by.

use std::io::Write;
use std::path::{Path, PathBuf};

use vlmflow_store::db::Db;
use vlmflow_store::run_status::RunStatus;

/// The folder of `stage`'s run `run_id` under `root` (`cache/tensorboard`).
pub fn run_dir(root: &Path, stage: &str, run_id: i64) -> PathBuf {
    root.join(stage).join(format!("run-{run_id}"))
}

/// Writes an event file for every run in `db` that recorded metrics but has no folder under
/// `root` (runs from before this existed, or from a database rebuilt from run records), and
/// returns the folders written. Their events carry the run's start as wall time: the database
/// keeps no time per metric. A running run is left to the build that runs it.
pub fn write_missing(db: &Db, root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for run in db.runs(None, usize::MAX)? {
        let dir = run_dir(root, &run.stage, run.id);
        if run.status == RunStatus::Running || dir.exists() {
            continue;
        }
        let metrics = db.metrics_of(run.id)?;
        if metrics.is_empty() {
            continue;
        }
        // Into a temporary folder first: a half-written run is never taken for a whole one.
        let partial = dir.with_extension("partial");
        let _ = std::fs::remove_dir_all(&partial);
        let mut file = EventFile::create(&partial, run.started_at)?;
        let last_step = metrics.iter().filter_map(|m| m.1).max().unwrap_or(0);
        for (name, step, value) in &metrics {
            file.scalar(name, step.unwrap_or(last_step), *value, run.started_at)?;
        }
        file.flush()?;
        drop(file);
        std::fs::rename(&partial, &dir)?;
        written.push(dir);
    }
    Ok(written)
}

/// One run's event file, written through a buffer (`flush` to make it visible).
pub struct EventFile {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
}

impl EventFile {
    /// A new event file in `dir` (created), named as TensorBoard's writers name theirs.
    pub fn create(dir: &Path, wall_time: f64) -> std::io::Result<EventFile> {
        std::fs::create_dir_all(dir)?;
        let name = format!(
            "events.out.tfevents.{}.{}.vlmflow",
            wall_time as u64,
            crate::host()
        );
        let path = dir.join(name);
        let mut file = EventFile {
            out: std::io::BufWriter::new(std::fs::File::create(&path)?),
            path,
        };
        let mut event = event_header(wall_time, 0);
        string_field(&mut event, 3, "brain.Event:2");
        file.record(&event)?;
        Ok(file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One scalar `value` of metric `name` at `step`.
    pub fn scalar(
        &mut self,
        name: &str,
        step: i64,
        value: f64,
        wall_time: f64,
    ) -> std::io::Result<()> {
        let mut value_msg = Vec::new();
        string_field(&mut value_msg, 1, &name.replace('.', "/"));
        key(&mut value_msg, 2, FIXED32);
        value_msg.extend((value as f32).to_le_bytes());
        let mut summary = Vec::new();
        bytes_field(&mut summary, 1, &value_msg);
        let mut event = event_header(wall_time, step);
        bytes_field(&mut event, 5, &summary);
        self.record(&event)
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    fn record(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let length = (payload.len() as u64).to_le_bytes();
        self.out.write_all(&length)?;
        self.out.write_all(&masked_crc(&length).to_le_bytes())?;
        self.out.write_all(payload)?;
        self.out.write_all(&masked_crc(payload).to_le_bytes())
    }
}

// ---------------------------------------------------------------- protobuf, the little needed

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const BYTES: u8 = 2;
const FIXED32: u8 = 5;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    key(out, field, BYTES);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn string_field(out: &mut Vec<u8>, field: u32, text: &str) {
    bytes_field(out, field, text.as_bytes());
}

/// An `Event`'s `wall_time` (1, double) and `step` (2, int64).
fn event_header(wall_time: f64, step: i64) -> Vec<u8> {
    let mut event = Vec::new();
    key(&mut event, 1, FIXED64);
    event.extend(wall_time.to_le_bytes());
    key(&mut event, 2, VARINT);
    // int64 is a two's-complement varint: a negative step takes ten bytes.
    varint(&mut event, step as u64);
    event
}

// ---------------------------------------------------------------- CRC-32C (Castagnoli)

const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc = CRC32C_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// TFRecord's mask, so that a CRC of data holding CRCs stays well mixed.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_its_check_value() {
        // The CRC catalogue's check value for CRC-32C (iSCSI).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn varints_and_records_are_framed_as_tensorflow_reads_them() {
        let mut out = Vec::new();
        varint(&mut out, 300);
        assert_eq!(out, [0xAC, 0x02]);
        let mut out = Vec::new();
        varint(&mut out, -1i64 as u64);
        assert_eq!(out.len(), 10);

        let dir = tempfile::tempdir().unwrap();
        let mut file = EventFile::create(dir.path(), 1_700_000_000.5).unwrap();
        file.scalar("train.loss", 3, 0.25, 1_700_000_001.0).unwrap();
        file.flush().unwrap();
        let bytes = std::fs::read(file.path()).unwrap();
        // Walk the records: every length and payload CRC checks.
        let (mut at, mut records) = (0, 0);
        while at < bytes.len() {
            let length = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            assert_eq!(crc, masked_crc(&bytes[at..at + 8]));
            let payload = &bytes[at + 12..at + 12 + length];
            let crc = u32::from_le_bytes(
                bytes[at + 12 + length..at + 16 + length]
                    .try_into()
                    .unwrap(),
            );
            assert_eq!(crc, masked_crc(payload));
            at += 16 + length;
            records += 1;
        }
        assert_eq!(records, 2);
        let tail = String::from_utf8_lossy(&bytes);
        assert!(tail.contains("brain.Event:2") && tail.contains("train/loss"));
    }
}
