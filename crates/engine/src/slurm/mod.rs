//! Stages run as Slurm batch jobs (`executor = "slurm"`). The submitting `vlmflow build` writes
//! the stage's job folder on the filesystem it shares with the nodes, `sbatch`es a job that runs
//! `vlmflow job-run` for exactly that stage and key, waits for it, and then commits its outputs
//! and records the run (with the job id and node) as for a run of its own.

pub mod job_dir;
pub mod node;
pub mod options;
mod state;
mod submit;

pub use options::SlurmOptions;
pub use submit::{JobEnd, Slurm};
