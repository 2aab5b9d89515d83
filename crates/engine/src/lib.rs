//! The engine: Stagefile, DAG, keys, freshness, scheduling, and the contract a kind implements
//! (`kind`). It knows no ML: it builds and tests with the `cmd` kind alone, and the binary hands it
//! the registry of kinds. A stage's work runs in this process (`runner`) or as a Slurm job
//! (`slurm`); where objects are kept is the store's `ObjectStore`.

pub mod build;
mod cmd_kind;
pub mod compare;
pub mod detached;
pub mod device;
pub mod diagnostic;
pub mod dirty;
pub mod execute;
pub mod gc;
pub mod history;
pub mod index_recovery;
pub mod interrupt;
pub mod key;
pub mod kind;
pub mod lock;
pub mod outcome;
mod outs;
pub mod params;
pub mod plan;
pub mod provenance;
pub mod query;
pub mod remote_sync;
pub mod report;
mod restore;
mod run;
pub mod run_metrics;
pub mod runner;
pub mod runs;
pub mod scheduler;
pub mod slurm;
pub mod stage_states;
pub mod stagefile;
pub mod sweep;
pub mod sweep_dag;
pub mod sweep_results;
pub mod sweep_space;
pub mod tensorboard;
pub mod verify;
mod verify_records;
pub mod workspace;

/// This machine's name, as recorded with every run.
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Unix seconds as `2026-11-24 13:05:09 UTC`.
pub fn format_time(secs: f64) -> String {
    let secs = secs as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Seconds as `0.004s`, `1.52s`, `3m07s`, `2h05m`.
pub fn format_duration(secs: f64) -> String {
    if secs < 0.1 {
        format!("{secs:.3}s")
    } else if secs < 60.0 {
        format!("{secs:.2}s")
    } else if secs < 3600.0 {
        format!("{}m{:02}s", (secs / 60.0) as u64, secs as u64 % 60)
    } else {
        format!(
            "{}h{:02}m",
            (secs / 3600.0) as u64,
            (secs / 60.0) as u64 % 60
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_times_and_durations() {
        assert_eq!(super::format_time(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            super::format_time(1_795_000_000.0),
            "2026-11-18 11:06:40 UTC"
        );
        assert_eq!(super::format_duration(0.0042), "0.004s");
        assert_eq!(super::format_duration(187.0), "3m07s");
    }
}
