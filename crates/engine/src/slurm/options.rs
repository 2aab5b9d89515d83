//! What a Slurm stage asks of the cluster, as written in the Stagefile (`[slurm]` for every Slurm
//! stage, a stage's own `slurm = { … }` over it), and the `sbatch` options that say it.

/// A Slurm stage's resources. `None`: the cluster's default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlurmOptions {
    pub gpus: Option<u32>,
    pub cpus: Option<u32>,
    /// As Slurm writes it: `16G`, `500M`, `2048` (megabytes).
    pub mem: Option<String>,
    /// As Slurm writes it: `90` (minutes), `10:00:00`, `2-00:00:00`.
    pub time: Option<String>,
    pub partition: Option<String>,
    pub account: Option<String>,
    /// Further options passed to `sbatch` as they are (`--qos=high`, `--constraint=a100`).
    pub sbatch: Vec<String>,
}

impl SlurmOptions {
    /// These options with `defaults` filling what they leave out; `sbatch` lists add up, the
    /// defaults' first.
    pub fn over(&self, defaults: &SlurmOptions) -> SlurmOptions {
        SlurmOptions {
            gpus: self.gpus.or(defaults.gpus),
            cpus: self.cpus.or(defaults.cpus),
            mem: self.mem.clone().or_else(|| defaults.mem.clone()),
            time: self.time.clone().or_else(|| defaults.time.clone()),
            partition: self
                .partition
                .clone()
                .or_else(|| defaults.partition.clone()),
            account: self.account.clone().or_else(|| defaults.account.clone()),
            sbatch: defaults
                .sbatch
                .iter()
                .chain(&self.sbatch)
                .cloned()
                .collect(),
        }
    }

    /// The `sbatch` options for these resources.
    pub fn sbatch_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(n) = self.gpus.filter(|&n| n > 0) {
            // `--gres` rather than `--gpus`: every select plugin understands it.
            args.push(format!("--gres=gpu:{n}"));
        }
        if let Some(n) = self.cpus {
            args.push(format!("--cpus-per-task={n}"));
        }
        let named = [
            ("--mem", &self.mem),
            ("--time", &self.time),
            ("--partition", &self.partition),
            ("--account", &self.account),
        ];
        for (option, value) in named {
            if let Some(v) = value {
                args.push(format!("{option}={v}"));
            }
        }
        args.extend(self.sbatch.iter().cloned());
        args
    }
}

/// Whether `mem` is a Slurm memory amount: digits, then at most one of K, M, G, T.
pub fn valid_mem(mem: &str) -> bool {
    let digits = mem.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
    !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
        && mem.len() - digits.len() <= 1
}

/// Whether `time` is a Slurm time limit: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`, or
/// `UNLIMITED`/`INFINITE`.
pub fn valid_time(time: &str) -> bool {
    if matches!(time, "UNLIMITED" | "INFINITE") {
        return true;
    }
    let numbers = |s: &str, most: usize| {
        let parts: Vec<&str> = s.split(':').collect();
        parts.len() <= most
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    };
    match time.split_once('-') {
        Some((days, rest)) => numbers(days, 1) && numbers(rest, 3),
        None => numbers(time, 3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_options_win_and_sbatch_lists_add_up() {
        let defaults = SlurmOptions {
            cpus: Some(4),
            partition: Some("gpu".into()),
            sbatch: vec!["--qos=normal".into()],
            ..Default::default()
        };
        let stage = SlurmOptions {
            gpus: Some(1),
            cpus: Some(8),
            time: Some("10:00:00".into()),
            sbatch: vec!["--constraint=a100".into()],
            ..Default::default()
        };
        assert_eq!(
            stage.over(&defaults).sbatch_args(),
            [
                "--gres=gpu:1",
                "--cpus-per-task=8",
                "--time=10:00:00",
                "--partition=gpu",
                "--qos=normal",
                "--constraint=a100"
            ]
        );
    }

    #[test]
    fn memory_and_time_as_slurm_writes_them() {
        for ok in ["16G", "500M", "2048", "1t"] {
            assert!(valid_mem(ok), "{ok}");
        }
        for bad in ["", "G", "16GB", "1.5G", "-1"] {
            assert!(!valid_mem(bad), "{bad}");
        }
        for ok in [
            "90",
            "30:00",
            "10:00:00",
            "2-00",
            "2-12:00",
            "1-00:00:00",
            "INFINITE",
        ] {
            assert!(valid_time(ok), "{ok}");
        }
        for bad in ["", "1h", "1:2:3:4", "2-", "-1", "10::00", "1-2-3"] {
            assert!(!valid_time(bad), "{bad}");
        }
    }
}
