//! Deciding what a stage needs: compute its key from its inputs and upstream artifacts, then
//! fresh (the workspace holds its artifact), restore (a kept run with that key exists), or run.
//! `build`, `build --dry-run` and `status` all decide through here, so they always agree.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::dirty::{self, Reason};
use super::key::KeyMaterial;
use super::stagefile::Stage;
use crate::kind::Kind;
use vlmflow_store::db::Db;
use vlmflow_store::{Cas, Digest, Manifest, StoreError, hash};

/// The state of a needed stage, as its dependents see it.
#[derive(Clone, Debug)]
pub enum UpstreamState {
    /// Its artifact, and the run that produced it.
    Ready {
        artifact: Digest,
        producer: Option<i64>,
    },
    /// It will run (or may run) first, so its artifact is not known yet.
    Pending,
}

#[derive(Clone, Debug)]
pub enum Decision {
    /// The workspace holds the artifact of a run with this key.
    Fresh {
        artifact: Digest,
        producer: i64,
    },
    /// A kept run with this key exists: put its artifact back instead of running.
    Restore {
        artifact: Digest,
        producer: i64,
        reasons: Vec<Reason>,
    },
    Run {
        reasons: Vec<Reason>,
    },
    /// Its key waits on upstream stages that will run first.
    AfterUpstream {
        reasons: Vec<Reason>,
    },
}

impl Decision {
    pub fn reasons(&self) -> &[Reason] {
        match self {
            Decision::Fresh { .. } => &[],
            Decision::Restore { reasons, .. }
            | Decision::Run { reasons }
            | Decision::AfterUpstream { reasons } => reasons,
        }
    }
}

pub struct Evaluation {
    pub material: KeyMaterial,
    pub key: Digest,
    /// What the stage's file inputs hold now (one manifest for all of them).
    pub inputs: Manifest,
    pub decision: Decision,
}

/// The declaration fields that shape a stage's output besides its params.
pub fn spec_of(stage: &Stage) -> BTreeMap<String, Value> {
    let mut spec = BTreeMap::new();
    if let Some(cmd) = &stage.cmd {
        spec.insert("cmd".into(), Value::from(cmd.as_str()));
    }
    spec.insert("outs".into(), Value::from(stage.outs.clone()));
    if let Some(metrics) = &stage.metrics {
        spec.insert("metrics".into(), Value::from(metrics.as_str()));
    }
    if let Some(family) = stage.device.as_deref().and_then(crate::device::key_part) {
        spec.insert("device".into(), Value::from(family));
    }
    spec
}

pub fn evaluate(
    db: &Db,
    cas: &Cas,
    root: &Path,
    stage: &Stage,
    kind: &dyn Kind,
    upstream: &BTreeMap<String, UpstreamState>,
    force: bool,
) -> Result<Evaluation, StoreError> {
    let inputs = if stage.inputs.is_empty() {
        Manifest::default()
    } else {
        hash::snapshot(&db.conn, root, &stage.inputs)?
    };
    let mut upstream_digests = BTreeMap::new();
    let mut pending = Vec::new();
    for (name, state) in upstream {
        match state {
            UpstreamState::Ready { artifact, .. } => {
                upstream_digests.insert(name.clone(), *artifact);
            }
            UpstreamState::Pending => pending.push(Reason::UpstreamPending(name.clone())),
        }
    }
    let material = KeyMaterial {
        kind: stage.kind.clone(),
        implementation: kind.version().to_string(),
        spec: spec_of(stage),
        params: stage.params.clone(),
        upstream: upstream_digests,
        inputs: stage
            .inputs
            .iter()
            .map(|p| (p.clone(), inputs.under(p).digest()))
            .collect(),
    };
    let key = material.key();
    let decision = if !pending.is_empty() {
        Decision::AfterUpstream { reasons: pending }
    } else if force {
        Decision::Run {
            reasons: vec![Reason::Forced],
        }
    } else {
        decide(db, cas, root, stage, &material, &key, &inputs)?
    };
    Ok(Evaluation {
        material,
        key,
        inputs,
        decision,
    })
}

/// Fresh, restore or run, for a stage whose key is known and that is not forced.
fn decide(
    db: &Db,
    cas: &Cas,
    root: &Path,
    stage: &Stage,
    material: &KeyMaterial,
    key: &Digest,
    inputs: &Manifest,
) -> Result<Decision, StoreError> {
    let current = db.current_run(&stage.name)?;
    let key_hex = key.to_hex();
    if let Some(current) = current.as_ref().filter(|c| c.key == key_hex) {
        let artifact: Digest = parse_digest(current.artifact.as_deref())?;
        let problems = out_problems(db, cas, root, &stage.outs, &artifact)?;
        let producer = current.source_run.unwrap_or(current.id);
        if problems.is_empty() {
            return Ok(Decision::Fresh { artifact, producer });
        }
        // Restored from the cache, unless the cache no longer holds it whole (gc, or `verify
        // --repair` found it damaged): then another kept run of this key, or a run.
        if db.artifact_kept(&artifact)? {
            return Ok(Decision::Restore {
                artifact,
                producer,
                reasons: problems,
            });
        }
        return restore_or_run(db, &key_hex, problems);
    }
    let reasons = match current {
        None => vec![Reason::NeverBuilt],
        Some(old) => match KeyMaterial::from_canonical(&old.key_material) {
            Some(old_material) => dirty::explain(&old_material, material, |path| {
                input_file_changes(cas, old.inputs_manifest.as_deref(), inputs, path)
            }),
            None => vec![Reason::NeverBuilt],
        },
    };
    restore_or_run(db, &key_hex, reasons)
}

/// Restore the newest kept run of the key, or run.
fn restore_or_run(db: &Db, key_hex: &str, reasons: Vec<Reason>) -> Result<Decision, StoreError> {
    Ok(match db.cached_run(key_hex)? {
        Some(cached) => Decision::Restore {
            artifact: parse_digest(cached.artifact.as_deref())?,
            producer: cached.id,
            reasons,
        },
        None => Decision::Run { reasons },
    })
}

fn parse_digest(text: Option<&str>) -> Result<Digest, StoreError> {
    text.and_then(|t| t.parse().ok())
        .ok_or_else(|| StoreError::Other("a recorded run has no valid artifact digest".into()))
}

/// Which outs differ from `artifact` in the workspace (empty when it holds exactly the artifact).
fn out_problems(
    db: &Db,
    cas: &Cas,
    root: &Path,
    outs: &[String],
    artifact: &Digest,
) -> Result<Vec<Reason>, StoreError> {
    match hash::snapshot(&db.conn, root, outs) {
        Ok(now) if now.digest() == *artifact => Ok(vec![]),
        Ok(now) => Ok(match cas.read_manifest(artifact) {
            Ok(expected) => outs
                .iter()
                .filter(|o| now.under(o) != expected.under(o))
                .map(|o| Reason::OutModified(o.clone()))
                .collect(),
            // Its manifest is gone (`verify --repair` quarantined it): every out is in doubt.
            Err(_) => outs
                .iter()
                .map(|o| Reason::OutModified(o.clone()))
                .collect(),
        }),
        Err(StoreError::Missing(_)) => Ok(outs
            .iter()
            .map(|o| {
                if root.join(o).symlink_metadata().is_ok() {
                    Reason::OutModified(o.clone())
                } else {
                    Reason::OutMissing(o.clone())
                }
            })
            .collect()),
        Err(e) => Err(e),
    }
}

/// The files that changed inside a changed input, comparing against the manifest recorded with the
/// run the workspace holds. Best effort: an unreadable old manifest just names the input.
fn input_file_changes(
    cas: &Cas,
    old_manifest: Option<&str>,
    inputs: &Manifest,
    path: &str,
) -> Vec<vlmflow_store::manifest::Change> {
    let Some(old) = old_manifest
        .and_then(|d| d.parse().ok())
        .and_then(|d| cas.read_manifest(&d).ok())
    else {
        return vec![];
    };
    let changes = old.under(path).changes(&inputs.under(path));
    // A single-file input that changed is named by the input itself.
    if changes.len() == 1 && changes[0].path == path {
        vec![]
    } else {
        changes
    }
}
