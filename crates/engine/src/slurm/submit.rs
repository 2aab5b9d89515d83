//! The submitting side: `sbatch` a stage's job, then wait for it — its state from `scontrol`, its
//! metrics, progress and log from the job's folder — and `scancel` it when the build is
//! interrupted.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::job_dir::{JobDir, JobResult, JobSpec, MetricLine, ProgressNote};
use super::options::SlurmOptions;
use super::state::{JobState, failure_message, slurm_explains};
use crate::interrupt;
use crate::kind::StageContext;
use crate::runner::RunError;

/// How often the job's folder is looked at.
const TICK: Duration = Duration::from_millis(250);
/// How long a result may lag behind Slurm's word that the job ended: a shared filesystem (NFS)
/// may hide a new file for a while. A job that completed wrote one, so it is waited for longer.
const RESULT_GRACE: Duration = Duration::from_secs(10);
const COMPLETED_RESULT_GRACE: Duration = Duration::from_secs(120);
/// How long an interrupted build waits for its cancelled job to stop (and checkpoint).
const CANCEL_GRACE: Duration = Duration::from_secs(60);

/// How vlmflow reaches Slurm: its commands on `PATH` (and `SLURM_CONF`, as Slurm reads it).
pub struct Slurm {
    /// The vlmflow the job runs on the node; it must be on a filesystem the nodes see.
    exe: PathBuf,
    /// How often `scontrol` is asked about a job.
    poll: Duration,
}

/// How a job ended, as the submitter records it.
pub struct JobEnd {
    /// The node the work ran on, once known.
    pub node: Option<String>,
    pub result: Result<(), RunError>,
}

impl Slurm {
    /// `VLMFLOW_JOB_BIN` names the vlmflow to run on the nodes (default: this one);
    /// `VLMFLOW_SLURM_POLL` how many seconds between questions to `scontrol` (default 5).
    pub fn from_env() -> Slurm {
        let exe = std::env::var_os("VLMFLOW_JOB_BIN")
            .map(PathBuf::from)
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| PathBuf::from("vlmflow"));
        let poll = std::env::var("VLMFLOW_SLURM_POLL")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(Duration::from_secs(5), Duration::from_secs_f64);
        Slurm { exe, poll }
    }

    /// The job of an earlier build to take over: one that succeeded, or one still queued or
    /// running. None when there is none, or it failed or is gone: the work is submitted anew.
    pub fn attachable(&self, dir: &JobDir) -> Option<String> {
        let job = dir.earlier_job()?;
        if let Some(result) = dir.result_of(&job) {
            return result.error.is_none().then_some(job);
        }
        match self.state(&job) {
            Ok(JobState::Pending { .. } | JobState::Running { .. }) => Some(job),
            _ => None,
        }
    }

    /// Submit the job `spec` describes; its id.
    pub fn submit(
        &self,
        dir: &JobDir,
        spec: &JobSpec,
        options: &SlurmOptions,
    ) -> Result<String, RunError> {
        let fail = |message: String| RunError::Kind(anyhow::anyhow!(message));
        let io = |path: &Path, e: std::io::Error| fail(format!("writing {}: {e}", path.display()));
        let spec_bytes = serde_json::to_vec_pretty(spec).expect("a job spec serializes");
        std::fs::write(dir.spec(), spec_bytes).map_err(|e| io(&dir.spec(), e))?;
        let script = format!(
            "#!/bin/sh\n# vlmflow stage {}\nexec {} job-run {}\n",
            spec.stage,
            shell_quote(&self.exe.to_string_lossy()),
            shell_quote(&dir.spec().to_string_lossy())
        );
        std::fs::write(dir.script(), script).map_err(|e| io(&dir.script(), e))?;
        let output = Command::new("sbatch")
            .arg("--parsable")
            .arg(format!("--job-name=vlmflow:{}", spec.stage))
            .arg(format!(
                "--output={}",
                dir.root.join("slurm-%j.out").display()
            ))
            .arg(format!("--chdir={}", spec.workspace.display()))
            .args(options.sbatch_args())
            .arg(dir.script())
            .output()
            .map_err(|e| {
                fail(format!(
                    "cannot run sbatch ({e}): build Slurm stages where Slurm's commands are \
                     (a login node), or run the stage here with executor = \"local\""
                ))
            })?;
        if !output.status.success() {
            let said = String::from_utf8_lossy(&output.stderr);
            return Err(fail(format!(
                "sbatch refused the job: {}; check the stage's `slurm` resources ({})",
                said.trim(),
                options.sbatch_args().join(" ")
            )));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        // `--parsable` prints `id` or `id;cluster`.
        let job = stdout.trim().split(';').next().unwrap_or("").to_string();
        if job.is_empty() {
            return Err(fail(format!(
                "sbatch gave no job id (it printed {stdout:?})"
            )));
        }
        std::fs::write(dir.job_id(), &job).map_err(|e| io(&dir.job_id(), e))?;
        Ok(job)
    }

    /// Wait for `job` to end, forwarding its metrics and progress to `ctx`; on an interrupt,
    /// cancel it.
    pub fn wait(&self, job: &str, dir: &JobDir, ctx: &StageContext<'_>) -> JobEnd {
        let mut metrics = Tail::new(dir.metrics());
        let mut log = Tail::new(dir.log());
        let mut last_line = String::new();
        let mut state = JobState::Pending {
            reason: String::new(),
        };
        let mut asked: Option<Instant> = None;
        loop {
            metrics.forward_metrics(ctx);
            if let Some(result) = dir.result_of(job) {
                metrics.forward_metrics(ctx);
                return self.end_with_result(job, dir, result);
            }
            if interrupt::requested() {
                return self.cancel(job, ctx);
            }
            if asked.is_none_or(|at| at.elapsed() >= self.poll) {
                asked = Some(Instant::now());
                if let Ok(now) = self.state(job) {
                    state = now;
                }
                if matches!(state, JobState::Ended { .. } | JobState::Unknown) {
                    return self.end_without_result(job, dir, ctx, &state, &mut metrics);
                }
            }
            if let Some(line) = log.last_line() {
                last_line = line;
            }
            let note: ProgressNote = std::fs::read(dir.progress())
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            let said = if note.message.is_empty() {
                &last_line
            } else {
                &note.message
            };
            let mut message = state.describe(job);
            if !said.is_empty() {
                message = format!("{message}: {said}");
            }
            ctx.progress(note.position, note.length, &message);
            std::thread::sleep(TICK);
        }
    }

    /// The job wrote its result. A failure Slurm explains better (a time limit, a cancel) is told
    /// in Slurm's words; the job itself saw only a signal.
    fn end_with_result(&self, job: &str, dir: &JobDir, result: JobResult) -> JobEnd {
        let node = Some(result.node.clone());
        let Some(error) = result.error else {
            return JobEnd {
                node,
                result: Ok(()),
            };
        };
        let state = self.ended_state(job, RESULT_GRACE);
        let message = if slurm_explains(&state) {
            format!("{} (the job: {error})", failure_message(job, &state))
        } else {
            format!("Slurm job {job} on {}: {error}", result.node)
        };
        append_slurm_output(dir, job);
        JobEnd {
            node,
            result: Err(RunError::Kind(anyhow::anyhow!(message))),
        }
    }

    /// Slurm says the job is over, and no result came: the job died before it could write one
    /// (killed at its time limit, its node lost, vlmflow missing on the node).
    fn end_without_result(
        &self,
        job: &str,
        dir: &JobDir,
        ctx: &StageContext<'_>,
        state: &JobState,
        metrics: &mut Tail,
    ) -> JobEnd {
        let grace = match state {
            JobState::Ended { state, .. } if state == "COMPLETED" => COMPLETED_RESULT_GRACE,
            _ => RESULT_GRACE,
        };
        let waited = Instant::now();
        while waited.elapsed() < grace {
            if let Some(result) = dir.result_of(job) {
                metrics.forward_metrics(ctx);
                return self.end_with_result(job, dir, result);
            }
            std::thread::sleep(TICK);
        }
        metrics.forward_metrics(ctx);
        append_slurm_output(dir, job);
        JobEnd {
            node: state.ended_on(),
            result: Err(RunError::Kind(anyhow::anyhow!(failure_message(job, state)))),
        }
    }

    /// The build was interrupted: cancel the job and give it a while to stop (a training kind
    /// saves a checkpoint on the signal Slurm sends).
    fn cancel(&self, job: &str, ctx: &StageContext<'_>) -> JobEnd {
        let cancelled = Command::new("scancel").arg(job).status();
        let message = match cancelled {
            Ok(status) if status.success() => format!("interrupted: Slurm job {job} cancelled"),
            Ok(status) => {
                format!("interrupted; `scancel {job}` failed ({status}): cancel it yourself")
            }
            Err(e) => format!("interrupted; cannot run scancel ({e}): cancel job {job} yourself"),
        };
        ctx.log(&format!("vlmflow: {message}"));
        ctx.progress(0, None, &format!("cancelling Slurm job {job}"));
        let state = self.ended_state(job, CANCEL_GRACE);
        JobEnd {
            node: state.ended_on(),
            result: Err(RunError::Kind(anyhow::anyhow!(message))),
        }
    }

    /// The job's state once Slurm says it ended, or as it is after `patience`.
    fn ended_state(&self, job: &str, patience: Duration) -> JobState {
        let started = Instant::now();
        loop {
            let state = self.state(job).unwrap_or(JobState::Unknown);
            let over = matches!(state, JobState::Ended { .. } | JobState::Unknown);
            if over || started.elapsed() >= patience {
                return state;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The job's state from `scontrol show job -o`; `Unknown` once Slurm has forgotten it.
    fn state(&self, job: &str) -> std::io::Result<JobState> {
        let output = Command::new("scontrol")
            .args(["show", "job", "-o", job])
            .output()?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            let said = String::from_utf8_lossy(&output.stderr);
            if said.contains("Invalid job id") {
                return Ok(JobState::Unknown);
            }
            return Err(std::io::Error::other(format!("scontrol: {}", said.trim())));
        }
        Ok(JobState::parse(stdout.lines().next().unwrap_or("")))
    }
}

/// Slurm's own capture of the job's output (vlmflow's errors before its log opened, a crash) at
/// the end of the run's log, so the log tail shows it.
fn append_slurm_output(dir: &JobDir, job: &str) {
    let Ok(captured) = std::fs::read_to_string(dir.slurm_output(job)) else {
        return;
    };
    if captured.trim().is_empty() {
        return;
    }
    let text = format!("--- Slurm's output of job {job} (slurm-{job}.out)\n{captured}");
    if let Ok(mut file) = std::fs::OpenOptions::new().append(true).open(dir.log()) {
        let _ = std::io::Write::write_all(&mut file, text.as_bytes());
    }
}

/// The new whole lines of a file another process appends to.
struct Tail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl Tail {
    fn new(path: PathBuf) -> Tail {
        Tail {
            path,
            offset: 0,
            partial: Vec::new(),
        }
    }

    fn new_lines(&mut self) -> Vec<String> {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut bytes = Vec::new();
        let Ok(read) = file.read_to_end(&mut bytes) else {
            return Vec::new();
        };
        self.offset += read as u64;
        self.partial.extend_from_slice(&bytes);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let whole: Vec<u8> = self.partial.drain(..=end).collect();
        String::from_utf8_lossy(&whole)
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn forward_metrics(&mut self, ctx: &StageContext<'_>) {
        for line in self.new_lines() {
            if let Ok(m) = serde_json::from_str::<MetricLine>(&line) {
                ctx.metric(&m.name, m.step, m.value.unwrap_or(f64::NAN));
            }
        }
    }

    fn last_line(&mut self) -> Option<String> {
        self.new_lines()
            .into_iter()
            .rev()
            .find(|l| !l.trim().is_empty())
    }
}

/// `text` in single quotes for `sh`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
