//! Carrying out a kind's work in this process: what a local stage does on the executor's thread,
//! and what a Slurm job does on its node (`slurm::node`). The executor prepares the run (its
//! folder, log, context) and records it either way.

use std::fmt;
use std::panic::AssertUnwindSafe;

use crate::kind::{Kind, StageContext};

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

/// Run the kind on the calling thread.
pub fn in_process(kind: &dyn Kind, ctx: &StageContext<'_>) -> Result<(), RunError> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| kind.run(ctx))) {
        Ok(result) => result.map_err(RunError::Kind),
        Err(panic) => Err(RunError::Panicked {
            kind: kind.name().to_string(),
            message: panic_text(&panic),
        }),
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}
