//! Why a stage is not fresh, as typed reasons compared from two key materials and rendered in
//! words a user can act on only at the edge (`params.lr 0.001 → 0.002`).

use std::fmt;

use serde_json::Value;

use super::key::KeyMaterial;
use super::params::{self, ParamChange};
use vlmflow_store::manifest::{Change, ChangeKind};

#[derive(Clone, Debug, PartialEq)]
pub enum Reason {
    NeverBuilt,
    Forced,
    KindChanged {
        old: String,
        new: String,
    },
    ImplementationChanged {
        kind: String,
        old: String,
        new: String,
    },
    SpecChanged {
        field: String,
        old: Option<Value>,
        new: Option<Value>,
    },
    Param(ParamChange),
    InputAdded(String),
    InputRemoved(String),
    /// A file input, or files inside a folder input (`files` empty when unknown).
    InputChanged {
        path: String,
        files: Vec<Change>,
    },
    UpstreamAdded(String),
    UpstreamRemoved(String),
    UpstreamChanged(String),
    /// The upstream stage will run first, so this stage's key is not known yet.
    UpstreamPending(String),
    OutMissing(String),
    OutModified(String),
    /// The kept run's artifact is damaged in the cache, so the stage runs instead of restoring.
    CachedArtifactDamaged,
    /// A kept run of this key was fetched from the remote cache, so the stage is restored.
    FromRemote,
}

/// How many changed files of one folder input are named before "and N more".
const FILES_SHOWN: usize = 3;

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<Value>| {
            v.as_ref()
                .map_or_else(|| "(unset)".to_string(), Value::to_string)
        };
        match self {
            Reason::NeverBuilt => write!(f, "never built"),
            Reason::Forced => write!(f, "forced with --force"),
            Reason::KindChanged { old, new } => write!(f, "kind {old} → {new}"),
            Reason::ImplementationChanged { kind, old, new } => {
                write!(f, "implementation of {kind} changed ({old} → {new})")
            }
            Reason::SpecChanged { field, old, new } => {
                write!(f, "{field} {} → {}", show(old), show(new))
            }
            Reason::Param(change) => write!(f, "params.{change}"),
            Reason::InputAdded(path) => write!(f, "input {path} added"),
            Reason::InputRemoved(path) => write!(f, "input {path} removed"),
            Reason::InputChanged { path, files } if files.is_empty() => {
                write!(f, "input {path} changed")
            }
            Reason::InputChanged { path, files } => {
                let named: Vec<String> = files
                    .iter()
                    .take(FILES_SHOWN)
                    .map(|c| {
                        let what = match c.kind {
                            ChangeKind::Added => "added",
                            ChangeKind::Removed => "removed",
                            ChangeKind::Modified => "changed",
                        };
                        format!("input {} {what}", c.path)
                    })
                    .collect();
                write!(f, "{}", named.join(", "))?;
                if files.len() > FILES_SHOWN {
                    write!(f, " and {} more in {path}", files.len() - FILES_SHOWN)?;
                }
                Ok(())
            }
            Reason::UpstreamAdded(s) => write!(f, "now needs {s}"),
            Reason::UpstreamRemoved(s) => write!(f, "no longer needs {s}"),
            Reason::UpstreamChanged(s) => write!(f, "upstream {s} produced a new artifact"),
            Reason::UpstreamPending(s) => write!(f, "upstream {s} will run first"),
            Reason::OutMissing(p) => write!(f, "out {p} is missing"),
            Reason::OutModified(p) => write!(f, "out {p} was modified"),
            Reason::CachedArtifactDamaged => write!(f, "cached artifact damaged"),
            Reason::FromRemote => write!(f, "restored from remote"),
        }
    }
}

/// Everything that differs from `old` (the material of the run the workspace holds) to `new`.
/// `file_changes(path)` lists the changed files inside a changed folder input, when known.
pub fn explain(
    old: &KeyMaterial,
    new: &KeyMaterial,
    mut file_changes: impl FnMut(&str) -> Vec<Change>,
) -> Vec<Reason> {
    let mut reasons = Vec::new();
    if old.kind != new.kind {
        reasons.push(Reason::KindChanged {
            old: old.kind.clone(),
            new: new.kind.clone(),
        });
    } else if old.implementation != new.implementation {
        reasons.push(Reason::ImplementationChanged {
            kind: new.kind.clone(),
            old: old.implementation.clone(),
            new: new.implementation.clone(),
        });
    }
    for field in old
        .spec
        .keys()
        .chain(new.spec.keys().filter(|k| !old.spec.contains_key(*k)))
    {
        let (o, n) = (old.spec.get(field), new.spec.get(field));
        if o != n {
            reasons.push(Reason::SpecChanged {
                field: field.clone(),
                old: o.cloned(),
                new: n.cloned(),
            });
        }
    }
    reasons.extend(
        params::diff(&old.params, &new.params)
            .into_iter()
            .map(Reason::Param),
    );
    for (path, digest) in &new.inputs {
        match old.inputs.get(path) {
            None => reasons.push(Reason::InputAdded(path.clone())),
            Some(d) if d != digest => reasons.push(Reason::InputChanged {
                path: path.clone(),
                files: file_changes(path),
            }),
            Some(_) => {}
        }
    }
    for path in old.inputs.keys().filter(|p| !new.inputs.contains_key(*p)) {
        reasons.push(Reason::InputRemoved(path.clone()));
    }
    for (stage, digest) in &new.upstream {
        match old.upstream.get(stage) {
            None => reasons.push(Reason::UpstreamAdded(stage.clone())),
            Some(d) if d != digest => reasons.push(Reason::UpstreamChanged(stage.clone())),
            Some(_) => {}
        }
    }
    for stage in old
        .upstream
        .keys()
        .filter(|s| !new.upstream.contains_key(*s))
    {
        reasons.push(Reason::UpstreamRemoved(stage.clone()));
    }
    reasons
}

#[cfg(test)]
mod tests {

    use super::*;
    use serde_json::json;
    use vlmflow_store::Digest;

    use crate::key::sample_material as material;

    #[test]
    fn reasons_read_as_the_user_would_say_them() {
        let old = material();
        let mut new = material();
        new.params["lr"] = json!(0.002);
        new.inputs.insert("data/raw".into(), Digest::of_bytes(b"c"));
        new.upstream
            .insert("clip-train".into(), Digest::of_bytes(b"d"));
        new.implementation = "2".into();
        let changed = vec![Change {
            path: "data/raw/img_001.png".into(),
            kind: ChangeKind::Modified,
        }];
        let text: Vec<String> = explain(&old, &new, |_| changed.clone())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            text,
            [
                "implementation of cmd changed (1 → 2)",
                "params.lr 0.001 → 0.002",
                "input data/raw/img_001.png changed",
                "upstream clip-train produced a new artifact",
            ]
        );
    }

    #[test]
    fn identical_material_has_no_reason() {
        assert!(explain(&material(), &material(), |_| vec![]).is_empty());
    }

    #[test]
    fn many_changed_files_are_summarised() {
        let files = (0..5)
            .map(|i| Change {
                path: format!("data/raw/{i}.png"),
                kind: ChangeKind::Added,
            })
            .collect();
        let r = Reason::InputChanged {
            path: "data/raw".into(),
            files,
        };
        assert_eq!(
            r.to_string(),
            "input data/raw/0.png added, input data/raw/1.png added, input data/raw/2.png added and 2 more in data/raw"
        );
    }
}
