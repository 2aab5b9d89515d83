//! What a build prints: one line per stage as it ends (ran / restored / fresh / failed, time, why),
//! and live progress for running stages — bars on a terminal, a line every few seconds otherwise.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::kind::Progress;
use crate::outcome::Outcome;

pub struct Reporter {
    multi: Option<MultiProgress>,
    name_width: usize,
    out: Mutex<()>,
    quiet: bool,
}

impl Reporter {
    pub fn new(name_width: usize) -> Reporter {
        let tty =
            std::io::stderr().is_terminal() && std::env::var_os("VLMFLOW_NO_PROGRESS").is_none();
        let multi = tty.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Reporter {
            multi,
            name_width,
            out: Mutex::new(()),
            quiet: false,
        }
    }

    /// A reporter that prints no stage lines (for `status`, which prints its own table).
    pub fn quiet() -> Reporter {
        Reporter {
            multi: None,
            name_width: 0,
            out: Mutex::new(()),
            quiet: true,
        }
    }

    /// Print a line on stdout, above any progress bars.
    pub fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        let _guard = self.out.lock();
        match &self.multi {
            Some(m) => {
                m.suspend(|| println!("{text}"));
            }
            None => {
                println!("{text}");
                let _ = std::io::stdout().flush();
            }
        }
    }

    /// Print a note on stderr (waiting for a lock, a saved leftover), above any progress bars.
    pub fn note(&self, text: &str) {
        let _guard = self.out.lock();
        match &self.multi {
            Some(m) => m.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    /// One stage's final line: `ran       train          1.52s  params.lr 0.001 → 0.002`.
    pub fn stage_line(&self, stage: &str, outcome: &Outcome) {
        let status = outcome.status.word();
        let time = outcome
            .seconds
            .map(super::format_duration)
            .unwrap_or_default();
        let detail = detail(outcome);
        let line = format!(
            "{status:<9} {stage:<w$} {time:>8}  {detail}",
            w = self.name_width
        );
        self.line(line.trim_end());
    }

    pub fn start_stage(&self, stage: &str) -> StageProgress {
        let bar = self.multi.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix} {elapsed:>5} {wide_msg}")
                    .expect("valid progress template"),
            );
            bar.set_prefix(format!("{stage:<w$}", w = self.name_width));
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        StageProgress {
            stage: stage.to_string(),
            bar,
            last_line: Mutex::new(Instant::now()),
        }
    }
}

/// The words after the stage name on its line: what stopped it, or why it ran.
fn detail(outcome: &Outcome) -> String {
    match &outcome.problem {
        Some(problem) => problem.to_string(),
        None => outcome
            .reasons
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
    }
}

pub struct StageProgress {
    stage: String,
    bar: Option<ProgressBar>,
    last_line: Mutex<Instant>,
}

/// Without a terminal, progress is a plain line at most this often.
const PLAIN_EVERY: Duration = Duration::from_secs(10);

impl Progress for StageProgress {
    fn update(&self, position: u64, length: Option<u64>, message: &str) {
        let counter = match length {
            Some(len) => format!("{position}/{len}"),
            None if position > 0 => position.to_string(),
            None => String::new(),
        };
        match &self.bar {
            Some(bar) => bar.set_message(format!("{counter} {message}")),
            None => {
                let Ok(mut last) = self.last_line.lock() else {
                    return;
                };
                if last.elapsed() >= PLAIN_EVERY {
                    *last = Instant::now();
                    eprintln!("  {} {counter} {message}", self.stage);
                }
            }
        }
    }
}

impl Drop for StageProgress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
