//! A stage's key: blake3 over everything that determines its output — kind, implementation version,
//! the stage's declaration (command, outs), canonical params, the *artifact digests* of the stages
//! it needs (so an identical rerun upstream leaves it fresh: early cutoff) and its input digests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::params::canonical_json;
use vlmflow_store::Digest;

/// What a key is computed from; stored with every run so `status` can say what changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyMaterial {
    pub kind: String,
    pub implementation: String,
    /// Declaration fields that shape the output besides params: `cmd`, `outs`, `device`, `metrics`.
    pub spec: BTreeMap<String, Value>,
    pub params: Value,
    /// Needed stage → the artifact it holds.
    pub upstream: BTreeMap<String, Digest>,
    /// Input path → digest of what it holds (a folder's digest is its manifest's).
    pub inputs: BTreeMap<String, Digest>,
}

impl KeyMaterial {
    /// The canonical JSON that is hashed and stored.
    pub fn canonical(&self) -> String {
        canonical_json(&serde_json::to_value(self).expect("key material serializes"))
    }

    pub fn key(&self) -> Digest {
        key_of_canonical(&self.canonical())
    }

    pub fn from_canonical(text: &str) -> Option<KeyMaterial> {
        serde_json::from_str(text).ok()
    }
}

pub fn key_of_canonical(canonical: &str) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(b"vlmflow stage key v1\n");
    h.update(canonical.as_bytes());
    h.finalize().into()
}

/// A small key material for tests of this module and of `dirty`.
#[cfg(test)]
pub(crate) fn sample_material() -> KeyMaterial {
    use serde_json::json;
    KeyMaterial {
        kind: "cmd".into(),
        implementation: "1".into(),
        spec: BTreeMap::from([("cmd".into(), json!("python3 prep.py"))]),
        params: json!({"lr": 0.001, "batch": 64}),
        upstream: BTreeMap::from([("clip-train".into(), Digest::of_bytes(b"a"))]),
        inputs: BTreeMap::from([("data/raw".into(), Digest::of_bytes(b"b"))]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use super::sample_material as material;

    #[test]
    fn key_is_stable_and_round_trips() {
        let m = material();
        let text = m.canonical();
        assert_eq!(KeyMaterial::from_canonical(&text).unwrap(), m);
        assert_eq!(key_of_canonical(&text), m.key());
        // Same params written in another order give the same key.
        let mut reordered = m.clone();
        reordered.params = serde_json::from_str(r#"{"batch": 64, "lr": 1e-3}"#).unwrap();
        assert_eq!(reordered.key(), m.key());
    }

    #[test]
    fn every_component_changes_the_key() {
        let base = material().key();
        let mut m = material();
        m.kind = "other".into();
        assert_ne!(m.key(), base);
        let mut m = material();
        m.implementation = "2".into();
        assert_ne!(m.key(), base);
        let mut m = material();
        m.spec.insert("cmd".into(), json!("python3 other.py"));
        assert_ne!(m.key(), base);
        let mut m = material();
        m.params["lr"] = json!(0.002);
        assert_ne!(m.key(), base);
        let mut m = material();
        m.upstream
            .insert("clip-train".into(), Digest::of_bytes(b"c"));
        assert_ne!(m.key(), base);
        let mut m = material();
        m.inputs.insert("data/raw".into(), Digest::of_bytes(b"c"));
        assert_ne!(m.key(), base);
    }
}
