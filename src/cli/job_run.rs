//! `vlmflow job-run SPEC`: what a Slurm stage's batch script runs on the node (hidden: `vlmflow
//! build` writes that script). The work and its files are the engine's `slurm::node`.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The job's spec.json, in the stage's job folder under cache/jobs/.
    spec: PathBuf,
}

pub fn run(args: Args) -> i32 {
    match vlmflow_engine::slurm::node::run_job(&args.spec, &vlmflow_stages::kinds()) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    }
}
