//! The `cmd` kind: runs a shell command in the workspace. The command reads its params from the
//! JSON file named by `$VLMFLOW_PARAMS`, writes its declared outs, and may write a metrics file.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::interrupt;
use crate::kind::{Kind, StageContext};

pub struct Cmd;

impl Kind for Cmd {
    fn name(&self) -> &'static str {
        "cmd"
    }

    fn version(&self) -> &'static str {
        "1"
    }

    fn runs_command(&self) -> bool {
        true
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let cmd = ctx.cmd.context("a cmd stage needs `cmd`")?;
        let log = ctx.log_file()?;
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(cmd)
            .current_dir(ctx.workspace)
            .env("VLMFLOW_PARAMS", ctx.params_file)
            .env("VLMFLOW_STAGE", ctx.stage)
            .env("VLMFLOW_WORKSPACE", ctx.workspace)
            .env("VLMFLOW_DEVICE", ctx.device)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group, so an interrupt reaches every process the command started.
            .process_group(0);
        // If vlmflow itself is killed (SIGKILL, OOM), take the command down with it rather than
        // leave it writing into the workspace. (Processes the shell forks are not covered.)
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("could not start `sh -c {cmd}`"))?;
        let pgid = child.id() as i32;
        let mut forwarded = false;
        let mut pause = Duration::from_millis(1);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if !forwarded && interrupt::requested() {
                // SAFETY: kill(2) on a process group we created; no memory is involved.
                unsafe { libc::kill(-pgid, interrupt::signal()) };
                forwarded = true;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        };
        if !status.success() {
            match (status.code(), status.signal()) {
                (Some(code), _) => bail!("command exited with status {code}"),
                (None, Some(sig)) => bail!("command was killed by signal {sig}"),
                _ => bail!("command failed: {status}"),
            }
        }
        if let Some(path) = ctx.metrics_file {
            read_metrics(ctx, path)?;
        }
        Ok(())
    }
}

/// Read the numbers a command wrote: `{"acc": 0.9, "eval": {"loss": 1.2}, "loss": [3.1, 2.7]}`.
/// Nested objects become dotted names; arrays of numbers become series indexed by step.
fn read_metrics(ctx: &StageContext<'_>, path: &std::path::Path) -> anyhow::Result<()> {
    let shown = path.strip_prefix(ctx.workspace).unwrap_or(path).display();
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("the command did not write its metrics file {shown}"))?;
    let value: Value = serde_json::from_str(&text)
        .with_context(|| format!("metrics file {shown} is not valid JSON"))?;
    if !value.is_object() {
        bail!("metrics file {shown} must hold a JSON object of numbers");
    }
    let mut stack = vec![(String::new(), &value)];
    while let Some((name, v)) = stack.pop() {
        match v {
            Value::Number(n) => ctx.metric(&name, None, n.as_f64().unwrap_or(f64::NAN)),
            Value::Object(map) => {
                for (k, v) in map {
                    let full = if name.is_empty() {
                        k.clone()
                    } else {
                        format!("{name}.{k}")
                    };
                    stack.push((full, v));
                }
            }
            Value::Array(items) => {
                for (step, item) in items.iter().enumerate() {
                    match item.as_f64() {
                        Some(x) => ctx.metric(&name, Some(step as i64), x),
                        None => bail!("metrics file {shown}: `{name}` must be a list of numbers"),
                    }
                }
            }
            _ => ctx.log(&format!(
                "vlmflow: metric `{name}` in {shown} is not a number; ignored"
            )),
        }
    }
    Ok(())
}
