//! Running the selected stages in dependency order: up to `jobs` stages at once on this machine,
//! and every Slurm stage whose needs are met besides (its worker only waits for the cluster). A
//! stage starts when every stage it needs has ended well and the resources it declares (e.g.
//! `gpus = 1`) are free; a stage whose upstream failed is skipped; after a failure, nothing new
//! starts unless `keep_going`.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex};

use super::interrupt;
use super::outcome::{Outcome, Problem, Status};
use super::plan::UpstreamState;
use super::stagefile::{Pipeline, RunsOn};

struct State {
    outcomes: Vec<Option<Outcome>>,
    running: Vec<bool>,
    /// Running stages that work on this machine (not Slurm jobs): at most `jobs`.
    running_here: usize,
    free: BTreeMap<String, u32>,
    stop: bool,
}

enum Next {
    Run(usize, BTreeMap<String, UpstreamState>),
    Wait,
    Done,
}

pub struct Schedule<'a> {
    pub pipeline: &'a Pipeline,
    pub selected: &'a [bool],
    pub jobs: usize,
    pub keep_going: bool,
}

impl Schedule<'_> {
    /// Run every selected stage through `work` (given a per-worker state made by `init`), calling
    /// `on_done` for each outcome (skips included) as it happens. Returns the outcomes by index.
    pub fn run<W>(
        &self,
        init: impl Fn() -> W + Sync,
        work: impl Fn(&mut W, usize, &BTreeMap<String, UpstreamState>) -> Outcome + Sync,
        on_done: impl Fn(usize, &Outcome) + Sync,
    ) -> Vec<Option<Outcome>> {
        let n = self.pipeline.stages.len();
        let state = Mutex::new(State {
            outcomes: vec![None; n],
            running: vec![false; n],
            running_here: 0,
            free: self.pipeline.resources.clone(),
            stop: false,
        });
        let wake = Condvar::new();
        let worker = || {
            let mut w = init();
            loop {
                let (index, upstream) = {
                    let mut st = state.lock().expect("scheduler state");
                    loop {
                        match self.next(&mut st, &on_done) {
                            Next::Run(i, up) => break (i, up),
                            Next::Wait => st = wake.wait(st).expect("scheduler state"),
                            Next::Done => {
                                wake.notify_all();
                                return;
                            }
                        }
                    }
                };
                let outcome = work(&mut w, index, &upstream);
                on_done(index, &outcome);
                let mut st = state.lock().expect("scheduler state");
                for (name, amount) in &self.pipeline.stages[index].resources {
                    *st.free.entry(name.clone()).or_default() += amount;
                }
                st.running[index] = false;
                if self.runs_here(index) {
                    st.running_here -= 1;
                }
                if outcome.status.is_failure() && !self.keep_going {
                    st.stop = true;
                }
                st.outcomes[index] = Some(outcome);
                wake.notify_all();
            }
        };
        let slurm_stages = (0..n)
            .filter(|&i| self.selected[i] && !self.runs_here(i))
            .count();
        let workers = self.jobs.max(1) + slurm_stages;
        if workers == 1 {
            worker();
        } else {
            std::thread::scope(|s| {
                for _ in 0..workers {
                    s.spawn(worker);
                }
            });
        }
        state.into_inner().expect("scheduler state").outcomes
    }

    /// Pick the next stage to start, settling skips on the way. Stages are in topological order, so
    /// one pass sees every skip cascade.
    fn next(&self, st: &mut State, on_done: &impl Fn(usize, &Outcome)) -> Next {
        let mut waiting = false;
        for (i, stage) in self.pipeline.stages.iter().enumerate() {
            if !self.selected[i] || st.outcomes[i].is_some() || st.running[i] {
                continue;
            }
            if st.stop || interrupt::requested() {
                let why = if interrupt::requested() {
                    Problem::BuildInterrupted
                } else {
                    Problem::BuildStopped
                };
                self.settle(st, i, Outcome::skipped(why), on_done);
                continue;
            }
            let mut upstream = BTreeMap::new();
            let mut blocked = None;
            let mut unfinished = false;
            for &need in &stage.needs {
                let name = &self.pipeline.stages[need].name;
                match &st.outcomes[need] {
                    None => unfinished = true,
                    Some(o) if o.status.is_failure() || o.status == Status::Skipped => {
                        blocked = Some(name.clone())
                    }
                    Some(o) => {
                        upstream.insert(name.clone(), o.upstream.clone());
                    }
                }
            }
            if let Some(name) = blocked {
                self.settle(
                    st,
                    i,
                    Outcome::skipped(Problem::UpstreamDidNotBuild(name)),
                    on_done,
                );
                continue;
            }
            if unfinished {
                waiting = true;
                continue;
            }
            if self.runs_here(i) && st.running_here >= self.jobs.max(1) {
                waiting = true;
                continue;
            }
            let fits = stage
                .resources
                .iter()
                .all(|(r, amount)| st.free.get(r).copied().unwrap_or(0) >= *amount);
            if !fits {
                waiting = true;
                continue;
            }
            for (r, amount) in &stage.resources {
                *st.free.entry(r.clone()).or_default() -= amount;
            }
            st.running[i] = true;
            if self.runs_here(i) {
                st.running_here += 1;
            }
            return Next::Run(i, upstream);
        }
        if waiting || st.running.iter().any(|&r| r) {
            Next::Wait
        } else {
            Next::Done
        }
    }

    fn runs_here(&self, index: usize) -> bool {
        self.pipeline.stages[index].runs_on == RunsOn::Local
    }

    fn settle(
        &self,
        st: &mut State,
        i: usize,
        outcome: Outcome,
        on_done: &impl Fn(usize, &Outcome),
    ) {
        on_done(i, &outcome);
        st.outcomes[i] = Some(outcome);
    }
}
