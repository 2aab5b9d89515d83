//! What Slurm says of a job, read from `scontrol show job -o` (no accounting database needed),
//! and what an end without vlmflow's result means for the user.

/// A job's state as the submitter shows it.
#[derive(Clone, Debug, PartialEq)]
pub enum JobState {
    /// Waiting for resources; `reason` as Slurm gives it (`Resources`, `Priority`).
    Pending {
        reason: String,
    },
    Running {
        node: String,
    },
    /// Over; `state` is Slurm's word (`COMPLETED`, `FAILED`, `TIMEOUT`…).
    Ended {
        state: String,
        node: String,
        exit_code: String,
        time_limit: String,
    },
    /// Slurm no longer knows the job (purged after `MinJobAge`, or the controller lost it).
    Unknown,
}

impl JobState {
    /// From one line of `scontrol show job -o <id>`.
    pub fn parse(line: &str) -> JobState {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .unwrap_or("")
                .to_string()
        };
        let node = field("NodeList");
        match field("JobState").as_str() {
            "" => JobState::Unknown,
            "PENDING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "CONFIGURING"
            | "SUSPENDED" | "RESV_DEL_HOLD" => JobState::Pending {
                reason: field("Reason"),
            },
            "RUNNING" | "COMPLETING" | "STAGE_OUT" | "SIGNALING" | "RESIZING" => {
                JobState::Running { node }
            }
            state => JobState::Ended {
                state: state.to_string(),
                node,
                exit_code: field("ExitCode"),
                time_limit: field("TimeLimit"),
            },
        }
    }

    /// The node of a job that ended, when Slurm names one.
    pub fn ended_on(&self) -> Option<String> {
        match self {
            JobState::Ended { node, .. } if !node.is_empty() => Some(node.clone()),
            _ => None,
        }
    }

    /// A few words for the progress line.
    pub fn describe(&self, job: &str) -> String {
        match self {
            JobState::Pending { reason } if reason.is_empty() || reason == "None" => {
                format!("Slurm job {job} pending")
            }
            JobState::Pending { reason } => format!("Slurm job {job} pending ({reason})"),
            JobState::Running { node } => format!("Slurm job {job} running on {node}"),
            JobState::Ended { state, .. } => format!("Slurm job {job} {}", state.to_lowercase()),
            JobState::Unknown => format!("Slurm job {job}"),
        }
    }
}

/// Why job `job` ended without its work succeeding, for a job that left no result of its own (or
/// whose end Slurm explains better: a time limit, a cancel, a lost node).
pub fn failure_message(job: &str, state: &JobState) -> String {
    let JobState::Ended {
        state,
        node,
        exit_code,
        time_limit,
    } = state
    else {
        return format!(
            "Slurm job {job} is gone and left no result: its output file (slurm-{job}.out) may say why"
        );
    };
    let on = if node.is_empty() {
        String::new()
    } else {
        format!(" on {node}")
    };
    match state.as_str() {
        "TIMEOUT" => format!(
            "Slurm job {job}{on} reached its time limit ({time_limit}) and was stopped: raise `time` in \
             the stage's `slurm` table; a kind that checkpoints resumes from where it stopped"
        ),
        "CANCELLED" => format!("Slurm job {job}{on} was cancelled (scancel)"),
        "NODE_FAIL" => format!(
            "the node of Slurm job {job}{on} failed: `vlmflow build` submits it again; a kind that \
             checkpoints resumes from where it stopped"
        ),
        "OUT_OF_MEMORY" => format!(
            "Slurm job {job}{on} ran out of memory: raise `mem` in the stage's `slurm` table"
        ),
        "BOOT_FAIL" | "PREEMPTED" | "DEADLINE" => {
            format!("Slurm job {job}{on} ended {state}: `vlmflow build` submits it again")
        }
        _ => format!(
            "Slurm job {job}{on} ended {state} (exit code {exit_code}) without finishing its work: \
             its output file (slurm-{job}.out) is at the end of the log"
        ),
    }
}

/// Whether Slurm's end explains the failure better than the job's own words: the job saw only a
/// signal.
pub fn slurm_explains(state: &JobState) -> bool {
    matches!(state, JobState::Ended { state, .. }
        if matches!(state.as_str(), "TIMEOUT" | "CANCELLED" | "NODE_FAIL" | "OUT_OF_MEMORY" | "PREEMPTED" | "DEADLINE"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scontrol_lines_give_states() {
        let pending = "JobId=7 JobName=vlmflow:train UserId=root(0) JobState=PENDING Reason=Resources \
                       Dependency=(null) TimeLimit=UNLIMITED NodeList=(null) ExitCode=0:0";
        assert_eq!(
            JobState::parse(pending).describe("7"),
            "Slurm job 7 pending (Resources)"
        );
        let running = "JobId=7 JobState=RUNNING Reason=None NodeList=vm ExitCode=0:0";
        assert_eq!(
            JobState::parse(running),
            JobState::Running { node: "vm".into() }
        );
        let timeout = "JobId=7 JobState=TIMEOUT Reason=TimeLimit TimeLimit=00:01:00 NodeList=gpu3 ExitCode=0:15";
        let state = JobState::parse(timeout);
        assert!(slurm_explains(&state));
        let message = failure_message("7", &state);
        assert!(message.contains("time limit (00:01:00)"), "{message}");
        assert!(message.contains("on gpu3"), "{message}");
        let failed = "JobId=7 JobState=FAILED Reason=NonZeroExitCode NodeList=vm ExitCode=3:0";
        assert!(failure_message("7", &JobState::parse(failed)).contains("exit code 3:0"));
        assert_eq!(JobState::parse(""), JobState::Unknown);
    }
}
