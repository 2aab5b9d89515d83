//! A manifest: the sorted list of what a set of paths holds (files by digest, dirs, symlinks).
//! Its digest is the digest of a directory input or of an artifact.
//!
//! # Canonical bytes
//!
//! A manifest is stored as UTF-8 text, one entry per line, sorted by path (byte order), no duplicates:
//!
//! ```text
//! vlmflow-manifest 1
//! d\t<path>
//! f\t<64 hex digest>\t<size>\t<path>        a regular file
//! x\t<64 hex digest>\t<size>\t<path>        an executable file
//! l\t<path>\t<target>                       a symlink
//! ```
//!
//! In paths and targets, `\` is written `\\`, a tab `\t` and a newline `\n`, so any UTF-8 name
//! round-trips. A line format rather than JSON: it is what `cat` shows, diffs well, and parses
//! 20,000 entries in about a millisecond.

use std::fmt;

use super::{Digest, Result, StoreError};

const HEADER: &str = "vlmflow-manifest 1\n";

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
            ChangeKind::Modified => "changed",
        })
    }
}

/// "data/raw/img_001.png changed"
impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.path, self.kind)
    }
}

impl Manifest {
    /// Sorts by path; duplicate paths are a bug of the caller (the first of equal paths is kept).
    pub fn new(mut entries: Vec<Entry>) -> Manifest {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        debug_assert!(
            entries
                .windows(2)
                .all(|w| w[0].path != w[1].path || w[0].node == w[1].node),
            "manifest with conflicting entries for one path"
        );
        entries.dedup_by(|later, earlier| later.path == earlier.path);
        Manifest { entries }
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn into_entries(self) -> Vec<Entry> {
        self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The node at exactly `path`.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.entries
            .binary_search_by(|e| e.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.entries[i].node)
    }

    /// blake3 of `to_bytes()`.
    pub fn digest(&self) -> Digest {
        Digest::of_bytes(&self.to_bytes())
    }

    /// Canonical bytes: equal manifests give equal bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(HEADER.len() + self.entries.len() * 112);
        out.push_str(HEADER);
        for e in &self.entries {
            match &e.node {
                Node::Dir => {
                    out.push_str("d\t");
                    push_escaped(&mut out, &e.path);
                }
                Node::File {
                    digest,
                    size,
                    executable,
                } => {
                    out.push_str(if *executable { "x\t" } else { "f\t" });
                    push_hex(&mut out, digest);
                    out.push('\t');
                    push_u64(&mut out, *size);
                    out.push('\t');
                    push_escaped(&mut out, &e.path);
                }
                Node::Symlink { target } => {
                    out.push_str("l\t");
                    push_escaped(&mut out, &e.path);
                    out.push('\t');
                    push_escaped(&mut out, target);
                }
            }
            out.push('\n');
        }
        out.into_bytes()
    }

    /// Parses canonical bytes; entries must be sorted and unique.
    pub fn from_bytes(bytes: &[u8]) -> Result<Manifest> {
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8", 0))?;
        let body = text
            .strip_prefix(HEADER)
            .ok_or_else(|| bad("missing header line", 1))?;
        let mut entries: Vec<Entry> = Vec::with_capacity(body.len() / 100);
        for (i, line) in body.split_terminator('\n').enumerate() {
            let lineno = i + 2;
            let entry = parse_line(line).ok_or_else(|| bad("malformed entry", lineno))?;
            if entry.path.is_empty() {
                return Err(bad("empty path", lineno));
            }
            if let Some(prev) = entries.last()
                && prev.path >= entry.path
            {
                return Err(bad("entries not sorted or duplicated", lineno));
            }
            entries.push(entry);
        }
        if !body.is_empty() && !body.ends_with('\n') {
            return Err(bad("missing final newline", entries.len() + 1));
        }
        Ok(Manifest { entries })
    }

    pub fn file_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e.node, Node::File { .. }))
            .count()
    }

    /// Each file's digest and size.
    pub fn file_sizes(&self) -> impl Iterator<Item = (Digest, u64)> + '_ {
        self.entries.iter().filter_map(|e| match e.node {
            Node::File { digest, size, .. } => Some((digest, size)),
            _ => None,
        })
    }

    pub fn total_size(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e.node {
                Node::File { size, .. } => size,
                _ => 0,
            })
            .sum()
    }

    /// Digests of every file object it references (a digest appears once per file holding it).
    pub fn objects(&self) -> impl Iterator<Item = Digest> + '_ {
        self.entries.iter().filter_map(|e| match e.node {
            Node::File { digest, .. } => Some(digest),
            _ => None,
        })
    }

    /// The entries equal to `prefix` or inside it. `prefix` is spelled as given to `snapshot` or
    /// `ingest` and normalized the same way ("./data/raw/" finds "data/raw").
    pub fn under(&self, prefix: &str) -> Manifest {
        let prefix = canonical_path(prefix);
        if prefix.is_empty() || prefix == "/" {
            // The workspace root holds everything; "/" every absolute path.
            let absolute = prefix == "/";
            return Manifest {
                entries: self
                    .entries
                    .iter()
                    .filter(|e| !absolute || e.path.starts_with('/'))
                    .cloned()
                    .collect(),
            };
        }
        let prefix = prefix.as_str();
        let mut entries = Vec::new();
        if let Ok(i) = self
            .entries
            .binary_search_by(|e| e.path.as_str().cmp(prefix))
        {
            entries.push(self.entries[i].clone());
        }
        // Every path inside `prefix` starts with "prefix/"; in byte order they lie between
        // "prefix/" and "prefix0" ('0' follows '/').
        let lo = format!("{prefix}/");
        let hi = format!("{prefix}0");
        let start = self
            .entries
            .partition_point(|e| e.path.as_str() < lo.as_str());
        let end = self
            .entries
            .partition_point(|e| e.path.as_str() < hi.as_str());
        entries.extend_from_slice(&self.entries[start..end]);
        Manifest { entries }
    }

    /// What changed from `self` (older) to `newer`, sorted by path.
    pub fn changes(&self, newer: &Manifest) -> Vec<Change> {
        let (a, b) = (&self.entries, &newer.entries);
        let (mut i, mut j) = (0, 0);
        let mut out = Vec::new();
        while i < a.len() || j < b.len() {
            let order = match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) => x.path.cmp(&y.path),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    out.push(Change {
                        path: a[i].path.clone(),
                        kind: ChangeKind::Removed,
                    });
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    out.push(Change {
                        path: b[j].path.clone(),
                        kind: ChangeKind::Added,
                    });
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    if a[i].node != b[j].node {
                        out.push(Change {
                            path: a[i].path.clone(),
                            kind: ChangeKind::Modified,
                        });
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        out
    }
}

fn bad(what: &str, line: usize) -> StoreError {
    StoreError::Other(format!("manifest is corrupt: {what} (line {line})"))
}

fn push_escaped(out: &mut String, s: &str) {
    if !s.contains(['\\', '\t', '\n']) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn unescape(s: &str) -> Option<String> {
    if !s.contains('\\') {
        return Some(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next()? {
                '\\' => out.push('\\'),
                't' => out.push('\t'),
                'n' => out.push('\n'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

fn push_hex(out: &mut String, d: &Digest) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in d.0 {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
}

fn push_u64(out: &mut String, n: u64) {
    use std::fmt::Write;
    let _ = write!(out, "{n}");
}

fn parse_hex(s: &str) -> Option<Digest> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nib = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut d = [0u8; 32];
    for (i, out) in d.iter_mut().enumerate() {
        *out = (nib(b[2 * i])? << 4) | nib(b[2 * i + 1])?;
    }
    Some(Digest(d))
}

fn parse_size(s: &str) -> Option<u64> {
    // Canonical decimal only: no sign, no leading zeros.
    if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    s.parse().ok()
}

fn parse_line(line: &str) -> Option<Entry> {
    let (tag, rest) = line.split_once('\t')?;
    match tag {
        "d" => {
            if rest.contains('\t') {
                return None;
            }
            Some(Entry {
                path: unescape(rest)?,
                node: Node::Dir,
            })
        }
        "f" | "x" => {
            let mut it = rest.splitn(3, '\t');
            let digest = parse_hex(it.next()?)?;
            let size = parse_size(it.next()?)?;
            let path = it.next()?;
            if path.contains('\t') {
                return None;
            }
            Some(Entry {
                path: unescape(path)?,
                node: Node::File {
                    digest,
                    size,
                    executable: tag == "x",
                },
            })
        }
        "l" => {
            let (path, target) = rest.split_once('\t')?;
            if target.contains('\t') {
                return None;
            }
            Some(Entry {
                path: unescape(path)?,
                node: Node::Symlink {
                    target: unescape(target)?,
                },
            })
        }
        _ => None,
    }
}

/// The canonical spelling of a user-given path: no empty or "." components, no trailing '/'.
/// ".." is kept (it may name something beside the workspace). "." gives "", "/" stays "/".
pub(crate) fn canonical_path(p: &str) -> String {
    let absolute = p.starts_with('/');
    let mut out = String::with_capacity(p.len());
    if absolute {
        out.push('/');
    }
    for c in p.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if out.len() > usize::from(absolute) {
            out.push('/');
        }
        out.push_str(c);
    }
    out
}

/// [`canonical_path`], refusing the workspace root itself ("." or "") and "/": a stage reads or
/// writes a file or folder inside them.
pub(crate) fn normalize_path(p: &str) -> Result<String> {
    let out = canonical_path(p);
    if out.is_empty() || out == "/" {
        return Err(StoreError::Other(format!(
            "path `{p}` names the workspace or filesystem root; name a file or folder inside it"
        )));
    }
    Ok(out)
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
