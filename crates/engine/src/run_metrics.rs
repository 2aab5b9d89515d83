//! A running stage's metrics, written to the run database as they come (every few seconds) on a
//! connection of their own: a 10-hour run's loss curve can be queried while it trains
//! (`vlmflow query`), and a killed process loses only the last seconds of it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::kind::MetricsSink;
use vlmflow_store::db::Db;

/// How often recorded metrics are written while the stage runs.
const FLUSH_EVERY: Duration = Duration::from_secs(2);

type Metric = (String, Option<i64>, f64);

pub struct RunMetrics {
    run_id: i64,
    db_path: PathBuf,
    state: Mutex<State>,
}

struct State {
    pending: Vec<Metric>,
    /// Metrics that had a non-finite value refused (warned about once each).
    refused: std::collections::HashSet<String>,
    /// Opened at the first flush (a stage that records nothing never opens it); `Err` once it
    /// could not be opened, after which everything waits for `finish`.
    db: Option<Result<Db, ()>>,
    last_flush: Instant,
}

impl RunMetrics {
    pub fn new(db_path: &Path, run_id: i64) -> RunMetrics {
        RunMetrics {
            run_id,
            db_path: db_path.to_path_buf(),
            state: Mutex::new(State {
                pending: Vec::new(),
                refused: Default::default(),
                db: None,
                last_flush: Instant::now(),
            }),
        }
    }

    /// What was not written yet (on `db`, the engine's connection), once the stage has returned.
    pub fn finish(self, db: &Db) -> Result<(), vlmflow_store::StoreError> {
        let state = self.state.into_inner().unwrap_or_else(|e| e.into_inner());
        db.insert_metrics(self.run_id, &state.pending)
    }
}

impl State {
    fn flush(&mut self, run_id: i64, db_path: &Path) {
        self.last_flush = Instant::now();
        let db = self.db.get_or_insert_with(|| {
            Db::open(db_path)
                .inspect_err(|e| tracing::warn!("metrics will be written when the run ends: {e}"))
                .map_err(|_| ())
        });
        let Ok(db) = db else { return };
        match db.insert_metrics(run_id, &self.pending) {
            Ok(()) => self.pending.clear(),
            // Kept for the next flush, or for `finish`.
            Err(e) => tracing::warn!("writing metrics of run {run_id}: {e}"),
        }
    }
}

impl MetricsSink for RunMetrics {
    /// A NaN or infinite value is refused, with a warning the first time per metric: the database
    /// holds numbers, and a diverging training stops on its own (`ml::train::train_loop`).
    fn record(&self, name: &str, step: Option<i64>, value: f64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !value.is_finite() {
            if state.refused.insert(name.to_string()) {
                let at = step.map_or_else(String::new, |s| format!(" at step {s}"));
                tracing::warn!(
                    "metric `{name}` is {value}{at}: not recorded (only finite values are)"
                );
            }
            return;
        }
        state.pending.push((name.to_string(), step, value));
        if state.last_flush.elapsed() >= FLUSH_EVERY {
            state.flush(self.run_id, &self.db_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_reach_the_database_while_the_run_goes_on_and_the_rest_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vlmflow.db");
        let db = Db::open(&path).unwrap();
        let build_id = db.begin_build(&["vlmflow".into()], "h").unwrap();
        let run_id = db
            .insert_run(&vlmflow_store::db::NewRun {
                build_id,
                stage: "train",
                kind: "cmd",
                impl_version: "1",
                key: "k",
                key_material: "{}",
                params: "{}",
                overrides: "{}",
                host: "h",
                device: "cpu",
            })
            .unwrap();
        let count = || {
            db.conn
                .query_row(
                    "SELECT count(*) FROM metrics WHERE run_id = ?1",
                    [run_id],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap()
        };
        let metrics = RunMetrics::new(&path, run_id);
        metrics.record("train.loss", Some(1), 2.0);
        assert_eq!(count(), 0, "not flushed yet");
        metrics.state.lock().unwrap().last_flush -= FLUSH_EVERY;
        metrics.record("train.loss", Some(2), 1.5);
        assert_eq!(count(), 2, "flushed while running");
        metrics.record("val.loss", None, 1.2);
        metrics.record("train.loss", Some(3), f64::NAN);
        metrics.record("train.grad_norm", Some(3), f64::INFINITY);
        metrics.finish(&db).unwrap();
        assert_eq!(count(), 3);
    }
}
