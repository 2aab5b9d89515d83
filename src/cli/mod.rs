//! The command line: thin wrappers that parse arguments, call the engine and print. Every command
//! that prints a table also has `--json`.

mod build;
mod chat;
mod dag;
mod gc;
mod job_run;
mod log;
mod metrics;
mod params;
mod provenance;
mod query;
mod remote;
mod status;
mod sweep;
mod table;
mod tensorboard;
mod ui;
mod verify;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use vlmflow_engine::build::EngineError;
use vlmflow_engine::workspace::Workspace;

#[derive(Parser)]
#[command(
    name = "vlmflow",
    version,
    about = "make for vision-language-model training"
)]
struct Cli {
    /// Run as if started in DIR (the workspace is DIR or its nearest parent with a Stagefile).
    #[arg(short = 'C', long = "dir", global = true, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Show the engine's own tracing on stderr (-v: info, -vv: debug). VLMFLOW_LOG=filter also works.
    #[arg(short = 'v', long = "trace", action = clap::ArgAction::Count, global = true)]
    trace: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the targets and everything they need (all stages when none is named).
    Build(build::Args),
    /// Say for every stage whether it is fresh, stale or never built, and why.
    Status(status::Args),
    /// Print the stage graph.
    Dag(dag::Args),
    /// Run history: ran / restored / failed / interrupted, when, how long, where, what changed.
    Log(log::Args),
    /// The full upstream lineage of an artifact (a path, a digest, a stage or a run id).
    Provenance(provenance::Args),
    /// Metrics of the current runs, or the difference between two runs.
    Metrics(metrics::Args),
    /// Compare params.
    Params(params::Args),
    /// Delete what no kept run needs.
    Gc(gc::Args),
    /// Build the targets once per setting of the params named, into the run-cache (the
    /// workspace's outs stay as they are), and print the results best first.
    Sweep(sweep::Args),
    /// List the sweeps, or show one's results best first.
    Sweeps(sweep::ListArgs),
    /// Send the current runs of stages (records, artifacts, logs) to the remote cache.
    Push(remote::PushArgs),
    /// Fetch stages from the remote cache into the workspace; run nothing.
    Pull(remote::PullArgs),
    /// Check every cache object, artifact and run record, and the database; `--repair` fixes.
    Verify(verify::Args),
    /// Read-only SQL over the provenance database (schema in the README).
    Query(query::Args),
    /// Write TensorBoard event files for runs that have none; builds write them as they run.
    Tensorboard(tensorboard::Args),
    /// Serve a local dashboard of the workspace: the DAG, runs, curves, lineage.
    Ui(ui::Args),
    /// Talk to a trained VLM about an image (a chat-export bundle).
    Chat(chat::Args),
    /// Run one stage's work as a Slurm job (what `vlmflow build` submits).
    #[command(hide = true)]
    JobRun(job_run::Args),
}

/// Parse the command line, run it, and return the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    init_tracing(cli.trace);
    let start = cli.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let command = match cli.command {
        Command::Chat(args) => {
            return chat::run(&start, args).unwrap_or_else(|e| {
                eprintln!("error: {e}");
                e.exit_code()
            });
        }
        // On a node, beside a build that holds the workspace: no lock, no database.
        Command::JobRun(args) => return job_run::run(args),
        command => command,
    };
    let Some(ws) = Workspace::find(&start) else {
        eprintln!(
            "error: no Stagefile in {} or any parent folder: run vlmflow inside a workspace, or pass -C DIR",
            std::path::absolute(&start).unwrap_or(start).display()
        );
        return 2;
    };
    // The database is an index of the run records in the cache: rebuilt here if it was lost.
    match ws.ensure_index(|holder| eprintln!("waiting for the workspace lock, held by {holder}")) {
        Ok(Some(rebuilt)) => eprintln!("note: {rebuilt}"),
        Ok(None) => {}
        Err(e) => {
            eprintln!("error: {e}");
            return e.exit_code();
        }
    }
    let result = match command {
        Command::Build(args) => build::run(&ws, args),
        Command::Status(args) => status::run(&ws, args),
        Command::Dag(args) => dag::run(&ws, args),
        Command::Log(args) => log::run(&ws, args),
        Command::Provenance(args) => provenance::run(&ws, args),
        Command::Metrics(args) => metrics::run(&ws, args),
        Command::Params(args) => params::run(&ws, args),
        Command::Gc(args) => gc::run(&ws, args),
        Command::Tensorboard(args) => tensorboard::run(&ws, args),
        Command::Sweep(args) => sweep::run(&ws, args),
        Command::Sweeps(args) => sweep::run_list(&ws, args),
        Command::Ui(args) => ui::run(ws, args),
        Command::Push(args) => remote::run_push(&ws, args),
        Command::Pull(args) => remote::run_pull(&ws, args),
        Command::Verify(args) => verify::run(&ws, args),
        Command::Query(args) => query::run(&ws, args),
        Command::Chat(_) | Command::JobRun(_) => {
            unreachable!("handled before the workspace is looked up")
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            match &e {
                EngineError::Stagefile(d) => eprintln!("{d}"),
                other => eprintln!("error: {other}"),
            }
            e.exit_code()
        }
    }
}

fn init_tracing(level: u8) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("VLMFLOW_LOG") {
        Ok(f) => EnvFilter::new(f),
        Err(_) => EnvFilter::new(match level {
            0 => "warn",
            1 => {
                "vlmflow=info,vlmflow_engine=info,vlmflow_store=info,vlmflow_stages=info,vlmflow_ml=info"
            }
            _ => {
                "vlmflow=debug,vlmflow_engine=debug,vlmflow_store=debug,vlmflow_stages=debug,vlmflow_ml=debug"
            }
        }),
    };
    // Colour codes only for a person at a terminal, never into a pipe or a log file.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Print a value as pretty JSON on stdout.
fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("serializable")
    );
}
