//! Where a stage's work runs. The executor prepares the run (its temp folder, log, context) and
//! records it; a `StageRunner` only carries out the kind's work: in this process today, as a cluster
//! job (a Slurm runner that runs `vlmflow` for one stage on a node) later, without the scheduler or
//! the executor changing.

use std::fmt;
use std::panic::AssertUnwindSafe;

use crate::kind::{Kind, StageContext};

pub trait StageRunner: Send + Sync {
    fn run(&self, kind: &dyn Kind, ctx: &StageContext<'_>) -> Result<(), RunError>;
}

/// Why a stage's work did not succeed.
#[derive(Debug)]
pub enum RunError {
    /// The kind returned an error.
    Kind(anyhow::Error),
    /// The kind panicked; a panic in a stage fails that stage, not the build.
    Panicked { kind: String, message: String },
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Kind(e) => write!(f, "{e:#}"),
            RunError::Panicked { kind, message } => {
                write!(f, "the {kind} stage panicked: {message}")
            }
        }
    }
}

/// Runs the kind on the calling thread.
pub struct InProcess;

impl StageRunner for InProcess {
    fn run(&self, kind: &dyn Kind, ctx: &StageContext<'_>) -> Result<(), RunError> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| kind.run(ctx))) {
            Ok(result) => result.map_err(RunError::Kind),
            Err(panic) => Err(RunError::Panicked {
                kind: kind.name().to_string(),
                message: panic_text(&panic),
            }),
        }
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}
