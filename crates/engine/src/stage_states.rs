//! Every stage's state as `vlmflow status` and the UI show it: fresh, stale or never built, what
//! a build would do about it, and why — a dry run of the build, which takes no lock and writes no
//! run, so it is safe while another build runs.

use serde::Serialize;

use crate::build::{BuildOptions, EngineError, build};
use crate::dirty::Reason;
use crate::kind::Kinds;
use crate::outcome::Status;
use crate::report::Reporter;
use crate::workspace::Workspace;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Fresh,
    Stale,
    NeverBuilt,
    /// The stage cannot be evaluated (a param, an input): `reasons` says what.
    Error,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Fresh => "fresh",
            State::Stale => "stale",
            State::NeverBuilt => "never built",
            State::Error => "error",
        }
    }
}

/// What a build would do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    None,
    /// Restore a cached run's artifact.
    Restore,
    Run,
    /// Run only if an upstream stage, when it runs, makes a new artifact.
    RunIfUpstreamChanges,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::None => "none",
            Action::Restore => "restore",
            Action::Run => "run",
            Action::RunIfUpstreamChanges => "run if upstream changes",
        }
    }
}

/// Both serialise as their words (`"never built"`, `"run if upstream changes"`), as
/// `status --json` has always printed them.
macro_rules! serialize_as_str {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    )*};
}
serialize_as_str!(State, Action);

#[derive(Clone, Debug, Serialize)]
pub struct StageState {
    pub stage: String,
    pub state: State,
    pub action: Action,
    pub reasons: Vec<String>,
}

/// The state of the stages `opts.targets` name and what they need (all stages when none); `opts`
/// as for `build`, which this runs dry.
pub fn stage_states(
    ws: &Workspace,
    kinds: &Kinds,
    opts: &BuildOptions,
) -> Result<Vec<StageState>, EngineError> {
    let opts = BuildOptions {
        dry_run: true,
        jobs: 1,
        ..opts.clone()
    };
    let report = build(ws, kinds, &opts, |_| Reporter::quiet())?;
    Ok(report
        .outcomes
        .into_iter()
        .map(|(stage, o)| {
            let never = o.reasons.contains(&Reason::NeverBuilt);
            let changed = if never {
                State::NeverBuilt
            } else {
                State::Stale
            };
            let (state, action) = match o.status {
                Status::Fresh => (State::Fresh, Action::None),
                Status::WouldRestore => (changed, Action::Restore),
                Status::WouldRun
                    if o.reasons
                        .iter()
                        .all(|r| matches!(r, Reason::UpstreamPending(_))) =>
                {
                    (State::Stale, Action::RunIfUpstreamChanges)
                }
                Status::WouldRun => (changed, Action::Run),
                _ => (State::Error, Action::None),
            };
            let reasons = match o.problem {
                Some(problem) => vec![problem.to_string()],
                None => o.reasons.iter().map(ToString::to_string).collect(),
            };
            StageState {
                stage,
                state,
                action,
                reasons,
            }
        })
        .collect())
}
