//! How a stage's turn in a build ended, as typed facts: its status, what dependents see of it, and
//! why (the `dirty::Reason`s it ran or was restored for, or the `Problem` that stopped it). Words are
//! made only where they are printed (`report.rs`, the CLI).

use std::fmt;

use super::dirty::Reason;
use super::plan::UpstreamState;
use vlmflow_store::{Digest, StoreError};

/// How a stage's turn in a build ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Fresh,
    Restored,
    Ran,
    Failed,
    Interrupted,
    /// Not attempted: an upstream stage failed, or the build stopped first.
    Skipped,
    /// Dry run: what would happen.
    WouldRestore,
    WouldRun,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Fresh => "fresh",
            Status::Restored => "restored",
            Status::Ran => "ran",
            Status::Failed => "failed",
            Status::Interrupted => "interrupted",
            Status::Skipped => "skipped",
            Status::WouldRestore => "restore",
            Status::WouldRun => "run",
        }
    }

    pub fn is_failure(self) -> bool {
        matches!(self, Status::Failed | Status::Interrupted)
    }
}

/// What kept a stage from building; each problem decides the stage's status.
#[derive(Clone, Debug, PartialEq)]
pub enum Problem {
    /// The work, or the bookkeeping around it, failed; the message says how.
    Failed(String),
    /// The run stopped because the user interrupted the build.
    Interrupted(String),
    /// Not attempted: this needed stage did not build.
    UpstreamDidNotBuild(String),
    /// Not attempted: the build was interrupted first.
    BuildInterrupted,
    /// Not attempted: the build stopped after a failure (no `--keep-going`).
    BuildStopped,
}

impl Problem {
    pub fn status(&self) -> Status {
        match self {
            Problem::Failed(_) => Status::Failed,
            Problem::Interrupted(_) => Status::Interrupted,
            Problem::UpstreamDidNotBuild(_) | Problem::BuildInterrupted | Problem::BuildStopped => {
                Status::Skipped
            }
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Failed(message) | Problem::Interrupted(message) => f.write_str(message),
            Problem::UpstreamDidNotBuild(stage) => write!(f, "upstream {stage} did not build"),
            Problem::BuildInterrupted => f.write_str("the build was interrupted"),
            Problem::BuildStopped => f.write_str("the build stopped after a failure"),
        }
    }
}

/// A store error around a stage's work fails the stage as the work failing would.
impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Problem {
        Problem::Failed(e.to_string())
    }
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub status: Status,
    /// What dependents see of this stage.
    pub upstream: UpstreamState,
    pub seconds: Option<f64>,
    /// Why it ran, was restored, or would be (empty when fresh).
    pub reasons: Vec<Reason>,
    /// What kept it from building, for failures and skips.
    pub problem: Option<Problem>,
}

impl Outcome {
    /// A stage whose artifact dependents can use.
    pub fn ready(
        status: Status,
        artifact: Digest,
        producer: i64,
        seconds: Option<f64>,
        reasons: Vec<Reason>,
    ) -> Outcome {
        Outcome {
            status,
            upstream: UpstreamState::Ready {
                artifact,
                producer: Some(producer),
            },
            seconds,
            reasons,
            problem: None,
        }
    }

    /// Dry run: the stage would run (or would once its upstream stages have).
    pub fn would_run(reasons: Vec<Reason>) -> Outcome {
        Outcome {
            status: Status::WouldRun,
            upstream: UpstreamState::Pending,
            seconds: None,
            reasons,
            problem: None,
        }
    }

    /// A stage that did not build; its status follows from the problem.
    pub fn not_built(problem: Problem, seconds: Option<f64>, reasons: Vec<Reason>) -> Outcome {
        Outcome {
            status: problem.status(),
            upstream: UpstreamState::Pending,
            seconds,
            reasons,
            problem: Some(problem),
        }
    }

    /// A stage that was not attempted.
    pub fn skipped(problem: Problem) -> Outcome {
        Outcome::not_built(problem, None, vec![])
    }
}
