//! Checkpoints: a folder that lets a killed training resume exactly where it was.
//!
//! `model.safetensors` (the parameters the optimizer trains; frozen ones never change, so they are
//! not copied), `optimizer.safetensors`, `state.json`, and `checksums.json` — the blake3 of the
//! other three, written last. A checkpoint whose files do not match their checksums (a flipped
//! byte, a truncation) is not loaded: resuming from it would silently train on damaged weights.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Error, Result, Var};
use serde::{Deserialize, Serialize};

use super::optim::AdamW;
use crate::param_store::{ParamStore, load_vars, save_vars};
use crate::rng::Rng;

/// Everything besides tensors needed to resume a run exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps completed.
    pub step: u64,
    /// The model config, as the stage wrote it (e.g. a serialised `ClipConfig`).
    pub config: serde_json::Value,
    /// The data-order generator, as it stands after `step` steps.
    pub rng: Rng,
    /// Samples consumed (or whatever position the data pipeline needs to resume).
    pub data_position: u64,
    /// (step, loss) of every step so far: a resumed run's loss curve is whole, not only the part
    /// after the resume. Absent in checkpoints written before it was kept.
    #[serde(default)]
    pub losses: Vec<(u64, f64)>,
}

pub struct Checkpoint;

/// What a checkpoint folder holds, as far as resuming goes.
#[derive(Debug, PartialEq)]
pub enum Found {
    Nothing,
    /// Every file matches its checksum.
    Whole(TrainState),
    /// Unusable, and why.
    Damaged(String),
}

const MODEL: &str = "model.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";
const STATE: &str = "state.json";
const CHECKSUMS: &str = "checksums.json";

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dir.with_file_name(name)
}

fn fsync(path: &Path) -> Result<()> {
    fs::File::open(path)?.sync_all()?;
    Ok(())
}

fn checksum(path: &Path) -> Result<String> {
    Ok(blake3::hash(&fs::read(path)?).to_hex().to_string())
}

impl Checkpoint {
    /// Writes the checkpoint to `dir` atomically: into `<dir>.tmp`, fsynced, then renamed over
    /// `dir`. A crash leaves either the old checkpoint or the new one, never a mix.
    pub fn save(dir: &Path, opt: &AdamW, state: &TrainState) -> Result<()> {
        let tmp = sibling(dir, ".tmp");
        let old = sibling(dir, ".old");
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        let trained: Vec<(String, Var)> = opt.params().cloned().collect();
        save_vars(&trained, &tmp.join(MODEL))?;
        opt.save(&tmp.join(OPTIMIZER))?;
        fs::write(
            tmp.join(STATE),
            serde_json::to_vec_pretty(state).map_err(Error::wrap)?,
        )?;
        let sums: BTreeMap<&str, String> = [MODEL, OPTIMIZER, STATE]
            .into_iter()
            .map(|name| Ok((name, checksum(&tmp.join(name))?)))
            .collect::<Result<_>>()?;
        let mut f = fs::File::create(tmp.join(CHECKSUMS))?;
        f.write_all(&serde_json::to_vec_pretty(&sums).map_err(Error::wrap)?)?;
        f.sync_all()?;
        for name in [MODEL, OPTIMIZER, STATE] {
            fsync(&tmp.join(name))?;
        }
        fsync(&tmp)?;
        // A directory cannot be renamed over a non-empty one: move the old one aside first.
        if dir.exists() {
            if old.exists() {
                fs::remove_dir_all(&old)?;
            }
            fs::rename(dir, &old)?;
        }
        fs::rename(&tmp, dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsync(parent)?;
        }
        if old.exists() {
            fs::remove_dir_all(&old)?;
        }
        Ok(())
    }

    /// The folder to read: `dir`, or `<dir>.old` when a crash struck between the two renames.
    fn resolve(dir: &Path) -> Option<PathBuf> {
        let old = sibling(dir, ".old");
        if dir.join(CHECKSUMS).exists() {
            Some(dir.to_path_buf())
        } else if old.join(CHECKSUMS).exists() {
            Some(old)
        } else if dir.exists() {
            // A folder without its checksums: written by an older vlmflow, or damaged.
            Some(dir.to_path_buf())
        } else {
            None
        }
    }

    /// Whether `dir` holds a checkpoint to resume from, every file checked against its checksum.
    pub fn inspect(dir: &Path) -> Found {
        let Some(dir) = Self::resolve(dir) else {
            return Found::Nothing;
        };
        match Self::check(&dir) {
            Ok(state) => Found::Whole(state),
            Err(why) => Found::Damaged(format!("{}: {why}", dir.display())),
        }
    }

    fn check(dir: &Path) -> std::result::Result<TrainState, String> {
        let sums: BTreeMap<String, String> = fs::read(dir.join(CHECKSUMS))
            .map_err(|e| format!("{CHECKSUMS}: {e}"))
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| format!("{CHECKSUMS}: {e}")))?;
        for name in [MODEL, OPTIMIZER, STATE] {
            let want = sums
                .get(name)
                .ok_or_else(|| format!("{CHECKSUMS} has no checksum of {name}"))?;
            let have = checksum(&dir.join(name)).map_err(|e| format!("{name}: {e}"))?;
            if &have != want {
                return Err(format!("{name} does not match its checksum"));
            }
        }
        let path = dir.join(STATE);
        fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| format!("{STATE}: {e}")))
    }

    /// Reads only `state.json` of a whole checkpoint: enough to rebuild the model from its config
    /// before `load`.
    pub fn read_state(dir: &Path) -> Result<TrainState> {
        match Self::inspect(dir) {
            Found::Whole(state) => Ok(state),
            Found::Damaged(why) => Err(Error::Msg(why)),
            Found::Nothing => Err(Error::Msg(format!("{}: no checkpoint here", dir.display()))),
        }
    }

    /// Overwrites `params` and `opt` from the checkpoint (checked whole first) and returns its
    /// state.
    pub fn load(dir: &Path, params: &ParamStore, opt: &mut AdamW) -> Result<TrainState> {
        let state = Self::read_state(dir)?;
        let dir = Self::resolve(dir).expect("read_state found it");
        let trained: Vec<(String, Var)> = opt.params().cloned().collect();
        load_vars(&trained, &dir.join(MODEL), params.device())?;
        opt.load(&dir.join(OPTIMIZER))?;
        if opt.step_count() != state.step {
            candle_core::bail!(
                "{}: optimizer is at step {}, state.json says {}",
                dir.display(),
                opt.step_count(),
                state.step
            );
        }
        Ok(state)
    }

    /// Deletes the checkpoint (and what a crash during `save` left beside it).
    pub fn discard(dir: &Path) -> Result<()> {
        for path in [
            dir.to_path_buf(),
            sibling(dir, ".old"),
            sibling(dir, ".tmp"),
        ] {
            if path.exists() {
                fs::remove_dir_all(&path)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "checkpoint_tests.rs"]
mod tests;
