//! CONTRACT STUB — helper B replaces this file.
//! A manifest: the sorted list of what a set of paths holds (files by digest, dirs, symlinks).
//! Its digest is the digest of a directory input or of an artifact.

use super::{Digest, Result};

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Node {
    File {
        digest: Digest,
        size: u64,
        executable: bool,
    },
    Dir,
    Symlink {
        target: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// '/'-separated; relative to the workspace root, or absolute for paths outside it.
    pub path: String,
    pub node: Node,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Manifest {
    entries: Vec<Entry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Removed,
    Modified,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    pub kind: ChangeKind,
}

impl Manifest {
    /// Sorts by path; duplicate paths are a bug of the caller.
    pub fn new(_entries: Vec<Entry>) -> Manifest {
        unimplemented!()
    }
    pub fn entries(&self) -> &[Entry] {
        unimplemented!()
    }
    /// blake3 of `to_bytes()`.
    pub fn digest(&self) -> Digest {
        unimplemented!()
    }
    /// Canonical bytes: equal manifests give equal bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        unimplemented!()
    }
    pub fn from_bytes(_bytes: &[u8]) -> Result<Manifest> {
        unimplemented!()
    }
    pub fn file_count(&self) -> usize {
        unimplemented!()
    }
    pub fn total_size(&self) -> u64 {
        unimplemented!()
    }
    /// Digests of every file object it references.
    pub fn objects(&self) -> impl Iterator<Item = Digest> + '_ {
        std::iter::empty()
    }
    /// The entries equal to `prefix` or inside it.
    pub fn under(&self, _prefix: &str) -> Manifest {
        unimplemented!()
    }
    /// What changed from `self` (older) to `newer`, sorted by path.
    pub fn changes(&self, _newer: &Manifest) -> Vec<Change> {
        unimplemented!()
    }
}
