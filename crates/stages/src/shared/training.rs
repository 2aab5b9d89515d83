//! What every training kind shares on the stage side: hooks that turn steps into metrics, log
//! lines and progress, and the loss curve written into the artifact.

use anyhow::bail;

use crate::StageContext;
use vlmflow_ml::train::plot::{Series, line_chart};
use vlmflow_ml::train::train_loop::{Finish, Hooks, StepReport};

pub(crate) struct StageHooks<'a, 'c> {
    ctx: &'a StageContext<'c>,
    steps: u64,
    losses: Vec<(f64, f64)>,
}

impl<'a, 'c> StageHooks<'a, 'c> {
    pub(crate) fn new(ctx: &'a StageContext<'c>, steps: u64) -> Self {
        Self {
            ctx,
            steps,
            losses: Vec::new(),
        }
    }

    /// Write `loss.svg` and the `train.loss_final` metric (mean of the last 20 steps).
    pub(crate) fn finish(&self) -> anyhow::Result<()> {
        let chart = line_chart(
            &format!("{} loss", self.ctx.stage),
            &[Series {
                name: "train loss",
                points: &self.losses,
            }],
        );
        std::fs::write(self.ctx.out_dir.join("loss.svg"), chart)?;
        let tail = &self.losses[self.losses.len().saturating_sub(20)..];
        if !tail.is_empty() {
            let mean = tail.iter().map(|(_, l)| l).sum::<f64>() / tail.len() as f64;
            self.ctx.metric("train.loss_final", None, mean);
        }
        Ok(())
    }
}

/// An interrupted run is a failed build step whose checkpoint the next build resumes from.
pub(crate) fn check_finished(finish: Finish, steps: u64) -> anyhow::Result<()> {
    if let Finish::Stopped(step) = finish {
        bail!(
            "interrupted after step {step} of {steps}; the checkpoint is kept and the next build resumes from it"
        );
    }
    Ok(())
}

impl Hooks for StageHooks<'_, '_> {
    /// The steps before the resume: their losses go into this run's curve and its `train.loss`
    /// series, so the run that finishes holds the whole of both.
    fn resumed(&mut self, losses: &[(u64, f64)]) {
        for &(step, loss) in losses {
            self.ctx.metric("train.loss", Some(step as i64), loss);
            self.losses.push((step as f64, loss));
        }
    }

    fn step(&mut self, r: &StepReport) {
        let step = Some(r.step as i64);
        self.ctx.metric("train.loss", step, r.loss);
        self.ctx.metric("train.lr", step, r.lr);
        self.ctx.metric("train.grad_norm", step, r.grad_norm);
        self.ctx
            .metric("train.samples_per_s", step, r.samples_per_s);
        for (name, value) in &r.extra {
            self.ctx.metric(&format!("train.{name}"), step, *value);
        }
        self.losses.push((r.step as f64, r.loss));
        self.ctx.progress(
            r.step,
            Some(self.steps),
            &format!("loss {:.3}  {:.0} samples/s", r.loss, r.samples_per_s),
        );
        if r.step.is_multiple_of(50) || r.step == self.steps {
            let extra: String = r
                .extra
                .iter()
                .map(|(name, value)| format!(" {name} {value:.3}"))
                .collect();
            self.ctx.log(&format!(
                "step {} loss {:.4} lr {:.2e} grad_norm {:.3}{extra}",
                r.step, r.loss, r.lr, r.grad_norm
            ));
        }
    }

    fn stop_requested(&self) -> bool {
        self.ctx.interrupted()
    }

    fn log(&mut self, line: &str) {
        self.ctx.log(line);
    }
}
