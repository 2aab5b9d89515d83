//! Where a stage runs: `executor = "local"` (this process) or `"slurm"` (a batch job), on a stage or
//! at the top of the Stagefile for every stage, and the Slurm resources of the top-level `[slurm]`
//! table (defaults) and of a stage's `slurm = { … }` table.

use std::ops::Range;

use toml::Spanned;
use toml::de::DeValue;

use super::Loader;
use crate::diagnostic::{did_you_mean, list_choices};
use crate::slurm::options::{SlurmOptions, valid_mem, valid_time};

/// Where a stage's work runs. Not part of its key: the same work gives the same artifact anywhere.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum RunsOn {
    #[default]
    Local,
    /// As a Slurm batch job with these resources (the stage's over the `[slurm]` defaults).
    Slurm(SlurmOptions),
}

/// The value of an `executor` key.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum ExecutorName {
    Local,
    Slurm,
}

const SLURM_KEYS: [&str; 7] = [
    "gpus",
    "cpus",
    "mem",
    "time",
    "partition",
    "account",
    "sbatch",
];

impl Loader<'_> {
    pub(super) fn executor(&mut self, value: &Spanned<DeValue<'_>>) -> Option<ExecutorName> {
        match value.get_ref().as_str() {
            Some("local") => Some(ExecutorName::Local),
            Some("slurm") => Some(ExecutorName::Slurm),
            _ => {
                let message = "`executor` must be \"local\" or \"slurm\"";
                let help = "write executor = \"slurm\" to run as a Slurm batch job, \
                            or leave it out to run here";
                self.error(value.span(), message, help);
                None
            }
        }
    }

    /// A `[slurm]` table or a stage's `slurm = { … }`.
    pub(super) fn slurm_table(&mut self, value: &Spanned<DeValue<'_>>) -> SlurmOptions {
        let mut options = SlurmOptions::default();
        let Some(table) = value.get_ref().as_table() else {
            let help = "write slurm = { gpus = 1, time = \"10:00:00\" }";
            self.error(value.span(), "`slurm` must be a table", help);
            return options;
        };
        for (key, v) in table.iter() {
            match key.get_ref().as_ref() {
                "gpus" => options.gpus = self.count(v, "gpus", 0),
                "cpus" => options.cpus = self.count(v, "cpus", 1),
                "mem" => options.mem = self.slurm_mem(v),
                "time" => {
                    let (message, help) = (
                        "Slurm `time` must be a time limit as sbatch takes it",
                        "write time = \"10:00:00\" (or \"90\" minutes, \"2-00:00:00\")",
                    );
                    options.time = self.slurm_string(v, valid_time, message, help);
                }
                "partition" => {
                    let (message, help) = (
                        "Slurm `partition` must be a name without spaces",
                        "write partition = \"gpu\"",
                    );
                    options.partition = self.slurm_string(v, is_name, message, help);
                }
                "account" => {
                    let (message, help) = (
                        "Slurm `account` must be a name without spaces",
                        "write account = \"my-project\"",
                    );
                    options.account = self.slurm_string(v, is_name, message, help);
                }
                "sbatch" => options.sbatch = self.sbatch_options(v),
                other => {
                    let help = match did_you_mean(other, SLURM_KEYS) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!(
                            "the Slurm keys are {}; pass any other sbatch option in `sbatch = [\"--qos=high\"]`",
                            list_choices(SLURM_KEYS)
                        ),
                    };
                    self.error(key.span(), format!("unknown Slurm key `{other}`"), help);
                }
            }
        }
        options
    }

    /// Where a stage runs, from its own `executor` and `slurm` and the workspace's.
    pub(super) fn runs_on(
        &mut self,
        stage: &str,
        executor: Option<ExecutorName>,
        slurm: Option<(SlurmOptions, Range<usize>)>,
    ) -> RunsOn {
        match executor.or(self.default_executor) {
            Some(ExecutorName::Slurm) => {
                let own = slurm.map(|(options, _)| options).unwrap_or_default();
                RunsOn::Slurm(own.over(&self.slurm_defaults))
            }
            Some(ExecutorName::Local) | None => {
                if let Some((_, span)) = slurm {
                    let message = format!("stage `{stage}` has Slurm resources but runs locally");
                    let help = "add executor = \"slurm\" to the stage (or at the top of the \
                                Stagefile for every stage), or remove `slurm`";
                    self.error(span, message, help);
                }
                RunsOn::Local
            }
        }
    }

    fn count(&mut self, value: &Spanned<DeValue<'_>>, key: &str, least: u32) -> Option<u32> {
        let n = value.get_ref().as_integer();
        match n.and_then(|i| u32::from_str_radix(i.as_str(), i.radix()).ok()) {
            Some(n) if n >= least => Some(n),
            _ => {
                let message = format!("Slurm `{key}` must be an integer of at least {least}");
                self.error(value.span(), message, format!("write {key} = 1"));
                None
            }
        }
    }

    /// `mem = "16G"`, or a number of megabytes.
    fn slurm_mem(&mut self, value: &Spanned<DeValue<'_>>) -> Option<String> {
        let text = match value.get_ref() {
            DeValue::Integer(i) => Some(i.as_str().to_string()),
            DeValue::String(s) => Some(s.to_string()),
            _ => None,
        };
        match text {
            Some(mem) if valid_mem(&mem) => Some(mem),
            _ => {
                let message = "Slurm `mem` must be an amount such as \"16G\" or \"500M\"";
                let help = "write mem = \"16G\" (units K, M, G, T; a bare number is megabytes)";
                self.error(value.span(), message, help);
                None
            }
        }
    }

    /// A string that `valid` accepts; else `message` and `help` at the value.
    fn slurm_string(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        valid: fn(&str) -> bool,
        message: &str,
        help: &str,
    ) -> Option<String> {
        match value.get_ref().as_str() {
            Some(s) if valid(s) => Some(s.to_string()),
            _ => {
                self.error(value.span(), message, help);
                None
            }
        }
    }

    fn sbatch_options(&mut self, value: &Spanned<DeValue<'_>>) -> Vec<String> {
        let mut options = Vec::new();
        for (option, span) in self.strings("sbatch", value).unwrap_or_default() {
            if option.starts_with('-') && !option.contains(char::is_whitespace) {
                options.push(option);
            } else {
                let message = format!("`{option}` is not an sbatch option");
                let help = "write each option whole, e.g. sbatch = [\"--qos=high\", \"--constraint=a100\"]";
                self.error(span, message, help);
            }
        }
        options
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && !s.contains(char::is_whitespace)
}
