//! A sweep's results: read back from the database (`vlmflow sweeps`, the UI), and ranked best
//! first by one of the targets' metrics.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::Value;

use super::build::EngineError;
use super::sweep::{SweepReport, TrialReport};
use super::sweep_space::Trial;
use vlmflow_store::db::Db;

/// The metric trials are ordered by, and which way is better.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranking {
    pub metric: String,
    pub lower_is_better: bool,
}

/// Names that read as "lower is better".
const LOWER_IS_BETTER: [&str; 6] = ["loss", "error", "perplexity", "ppl", "wer", "cer"];
/// Names a sweep is ranked by when none is asked for, in order of preference.
const PREFERRED: [&str; 7] = [
    "accuracy",
    "top1",
    "exact_match",
    "f1",
    "score",
    "val_loss",
    "loss",
];

impl Ranking {
    /// By `metric`, its direction read from its name (`val_loss`: lower is better).
    pub fn by(metric: &str) -> Ranking {
        let lower = metric.to_ascii_lowercase();
        Ranking {
            metric: metric.to_string(),
            lower_is_better: LOWER_IS_BETTER.iter().any(|w| lower.contains(w)),
        }
    }

    /// Without a choice: the first of the report's metrics to end in a preferred name, else its
    /// first metric; none when no trial has metrics.
    pub fn default_for(report: &SweepReport) -> Option<Ranking> {
        let names: Vec<&String> = report
            .trials
            .iter()
            .flat_map(|t| t.metrics.keys())
            .collect();
        PREFERRED
            .iter()
            .find_map(|p| {
                names
                    .iter()
                    .find(|n| n.as_str() == *p || n.ends_with(&format!(".{p}")))
            })
            .or(names.first())
            .map(|name| Ranking::by(name))
    }
}

impl SweepReport {
    /// Best first by `ranking`; trials without the metric last, in their order.
    pub fn rank(&mut self, ranking: &Ranking) {
        let value = |t: &TrialReport| t.metrics.get(&ranking.metric).copied();
        self.trials.sort_by(|a, b| match (value(a), value(b)) {
            (Some(x), Some(y)) => {
                let order = x.partial_cmp(&y).unwrap_or(Ordering::Equal);
                if ranking.lower_is_better {
                    order
                } else {
                    order.reverse()
                }
            }
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => a.number.cmp(&b.number),
        });
    }
}

/// The sweep recorded as `name`, with each trial's runs and its targets' final metrics.
pub fn recorded(db: &Db, name: &str) -> Result<Option<SweepReport>, EngineError> {
    let Some(row) = db.sweep(name)? else {
        return Ok(None);
    };
    let targets: Vec<String> = serde_json::from_str(&row.targets).unwrap_or_default();
    let mut trials = Vec::new();
    for t in db.trials(row.id)? {
        let values = match serde_json::from_str(&t.assignment) {
            Ok(Value::Object(map)) => map.into_iter().collect(),
            _ => Vec::new(),
        };
        let runs: BTreeMap<String, i64> = t.runs.into_iter().collect();
        trials.push(TrialReport {
            number: t.trial as usize,
            trial: Trial { values },
            status: t.status,
            problem: t.error,
            metrics: super::sweep::target_metrics(db, &targets, &runs)?,
            runs,
        });
    }
    Ok(Some(SweepReport {
        name: row.name,
        targets,
        builds: None,
        trials,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vlmflow_store::run_status::BuildStatus;

    fn trial(number: usize, metrics: &[(&str, f64)]) -> TrialReport {
        TrialReport {
            number,
            trial: Trial { values: vec![] },
            status: BuildStatus::Ok,
            problem: None,
            runs: BTreeMap::new(),
            metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    fn report(trials: Vec<TrialReport>) -> SweepReport {
        SweepReport {
            name: "s".into(),
            targets: vec![],
            trials,
            builds: None,
        }
    }

    #[test]
    fn best_first_by_the_preferred_metric_and_its_direction() {
        let mut r = report(vec![
            trial(1, &[("accuracy", 0.5), ("loss", 1.0)]),
            trial(2, &[]),
            trial(3, &[("accuracy", 0.9), ("loss", 2.0)]),
        ]);
        let by = Ranking::default_for(&r).unwrap();
        assert_eq!(by, Ranking::by("accuracy"));
        r.rank(&by);
        let order: Vec<usize> = r.trials.iter().map(|t| t.number).collect();
        assert_eq!(order, [3, 1, 2]);
        let by_loss = Ranking::by("loss");
        assert!(by_loss.lower_is_better);
        r.rank(&by_loss);
        let order: Vec<usize> = r.trials.iter().map(|t| t.number).collect();
        assert_eq!(order, [1, 3, 2]);
    }

    #[test]
    fn with_several_targets_a_preferred_name_is_found_after_its_stage() {
        let r = report(vec![trial(
            1,
            &[("eval.top5", 0.5), ("zero-shot-eval.accuracy", 0.9)],
        )]);
        assert_eq!(
            Ranking::default_for(&r).unwrap().metric,
            "zero-shot-eval.accuracy"
        );
    }
}
