//! `vlmflow verify`.

use vlmflow_engine::build::EngineError;
use vlmflow_engine::verify::{Finding, verify};
use vlmflow_engine::workspace::Workspace;

#[derive(clap::Args)]
pub struct Args {
    /// Quarantine damaged objects and mark artifacts that cannot be restored whole as swept, so
    /// the next build reruns their stages; write missing run records; rebuild a damaged database
    /// from the run records (the old one is kept in cache/quarantine/).
    #[arg(long)]
    repair: bool,
    #[arg(long)]
    json: bool,
}

/// Exit code 0 when all is well, 1 when something was found (repaired or not).
pub fn run(ws: &Workspace, args: Args) -> Result<i32, EngineError> {
    let report = verify(ws, args.repair, |holder| {
        eprintln!("waiting for the workspace lock, held by {holder}");
    })?;
    if args.json {
        super::print_json(&report);
    } else {
        println!(
            "checked {} objects ({}), {} artifacts, {} runs, {} run records and the database",
            report.objects_checked,
            super::gc::human_bytes(report.bytes_checked),
            report.artifacts_checked,
            report.runs_checked,
            report.records_checked
        );
        for finding in &report.findings {
            println!("{}", describe(finding));
        }
        for repair in &report.repairs {
            println!("repaired: {repair}");
        }
        if report.all_well() {
            println!("all well");
        } else if !args.repair {
            println!(
                "{} problems: `vlmflow verify --repair` quarantines damaged objects, has their stages \
                 rebuilt, writes missing run records and rebuilds a damaged database from them",
                report.findings.len()
            );
        }
    }
    Ok(if report.all_well() { 0 } else { 1 })
}

fn describe(finding: &Finding) -> String {
    match finding {
        Finding::DamagedObject { object } => {
            format!("damaged object {object}: its content no longer matches its digest")
        }
        Finding::DamagedArtifact { artifact, why } => {
            format!("artifact {artifact} cannot be restored: {why}")
        }
        Finding::RunWithoutArtifact { run, artifact } => {
            format!("run {run} names artifact {artifact}, which the database does not record")
        }
        Finding::RunWithoutRecord { run, stage } => format!(
            "run {run} ({stage}) has no intact record in cache/runs/: losing the database would lose it"
        ),
        Finding::RecordNotIndexed { record, stage } => {
            format!("run record {record} ({stage}) is not in the database")
        }
        Finding::UnreadableRecord { record, why } => {
            format!("run record {record} cannot be read: {why}")
        }
        Finding::Database { message } => format!("database: {message}"),
    }
}
