//! A running stage's metrics, written to the run database as they come (every few seconds) on a
//! connection of their own: a 10-hour run's loss curve can be queried while it trains
//! (`vlmflow query`), and a killed process loses only the last seconds of it. The same metrics go
//! to the run's TensorBoard event file (`tensorboard`), flushed as often.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::kind::MetricsSink;
use crate::tensorboard::EventFile;
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
    /// The run's TensorBoard folder, and its event file once a metric came (`Err` once it could
    /// not be written: TensorBoard is a view, never a reason for a run to fail).
    events_dir: Option<PathBuf>,
    events: Option<Result<EventFile, ()>>,
    last_step: i64,
    /// Final metrics (no step), written at the last step when the run ends.
    finals: Vec<(String, f64)>,
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
                events_dir: None,
                events: None,
                last_step: 0,
                finals: Vec::new(),
                last_flush: Instant::now(),
            }),
        }
    }

    /// Also write the metrics as a TensorBoard event file in `dir`.
    pub fn with_tensorboard(self, dir: PathBuf) -> RunMetrics {
        let mut state = self.state.into_inner().unwrap_or_else(|e| e.into_inner());
        state.events_dir = Some(dir);
        RunMetrics {
            state: Mutex::new(state),
            ..self
        }
    }

    /// What was not written yet (on `db`, the engine's connection), once the stage has returned.
    pub fn finish(self, db: &Db) -> Result<(), vlmflow_store::StoreError> {
        let mut state = self.state.into_inner().unwrap_or_else(|e| e.into_inner());
        state.finish_tensorboard();
        db.insert_metrics(self.run_id, &state.pending)
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl State {
    /// A step's value goes to the event file now; a final metric (no step) waits for the end,
    /// to be drawn at the last step.
    fn record_event(&mut self, name: &str, step: Option<i64>, value: f64) {
        if self.events_dir.is_none() {
            return;
        }
        let Some(step) = step else {
            self.finals.push((name.to_string(), value));
            return;
        };
        self.last_step = self.last_step.max(step);
        self.write_event(name, step, value);
    }

    fn write_event(&mut self, name: &str, step: i64, value: f64) {
        let Some(dir) = &self.events_dir else { return };
        let events = self.events.get_or_insert_with(|| {
            EventFile::create(dir, now())
                .map_err(|e| tracing::warn!("no TensorBoard event file in {}: {e}", dir.display()))
        });
        if let Ok(file) = events
            && let Err(e) = file.scalar(name, step, value, now())
        {
            tracing::warn!(
                "writing {}: {e}; the rest goes to the database only",
                file.path().display()
            );
            self.events = Some(Err(()));
        }
    }

    /// The final metrics, at the last step, and everything on disk.
    fn finish_tensorboard(&mut self) {
        for (name, value) in std::mem::take(&mut self.finals) {
            self.write_event(&name, self.last_step, value);
        }
        if let Some(Ok(events)) = &mut self.events {
            let _ = events.flush();
        }
    }

    fn flush(&mut self, run_id: i64, db_path: &Path) {
        self.last_flush = Instant::now();
        if let Some(Ok(events)) = &mut self.events {
            let _ = events.flush();
        }
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
        state.record_event(name, step, value);
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
        let tensorboard = dir.path().join("tb");
        let metrics = RunMetrics::new(&path, run_id).with_tensorboard(tensorboard.clone());
        let event_bytes = || -> u64 {
            std::fs::read_dir(&tensorboard)
                .map(|files| files.flatten().map(|f| f.metadata().unwrap().len()).sum())
                .unwrap_or(0)
        };
        metrics.record("train.loss", Some(1), 2.0);
        assert_eq!(count(), 0, "not flushed yet");
        assert_eq!(event_bytes(), 0, "the event file is buffered too");
        metrics.state.lock().unwrap().last_flush -= FLUSH_EVERY;
        metrics.record("train.loss", Some(2), 1.5);
        assert_eq!(count(), 2, "flushed while running");
        let live = event_bytes();
        assert!(live > 0, "TensorBoard sees the curve while the run goes on");
        metrics.record("val.loss", None, 1.2);
        metrics.record("train.loss", Some(3), f64::NAN);
        metrics.record("train.grad_norm", Some(3), f64::INFINITY);
        metrics.finish(&db).unwrap();
        assert_eq!(count(), 3);
        assert!(event_bytes() > live, "val.loss written at the end");
    }
}
