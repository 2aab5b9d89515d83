//! Lexical path normalization for Stagefile paths: no file-system access, so loading stays fast
//! and a path means the same thing whether or not it exists yet.

use std::path::Path;

/// A normalized path as written in the Stagefile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Location {
    /// Workspace-relative: "a/b", no "./", no trailing "/"; "" is the workspace itself.
    Relative(String),
    /// Absolute, outside the workspace: "/data/coco".
    Absolute(String),
}

impl Location {
    pub(super) fn as_str(&self) -> &str {
        match self {
            Location::Relative(p) | Location::Absolute(p) => p,
        }
    }
}

/// Why a path was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PathError {
    /// A relative path whose `..` climbs out of the workspace.
    LeavesWorkspace,
}

/// Normalize `raw` lexically ("./a//b/" → "a/b", "a/../b" → "b"). An absolute path that lies
/// inside `workspace` (itself absolute and normalized) becomes relative, so it is tracked like any
/// other.
pub(super) fn normalize(raw: &str, workspace: &str) -> Result<Location, PathError> {
    let absolute = raw.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() && !absolute {
                    return Err(PathError::LeavesWorkspace);
                }
            }
            part => parts.push(part),
        }
    }
    let joined = parts.join("/");
    if !absolute {
        return Ok(Location::Relative(joined));
    }
    let full = format!("/{joined}");
    Ok(match strip_dir(&full, workspace) {
        Some(inside) => Location::Relative(inside.to_string()),
        None => Location::Absolute(full),
    })
}

/// The workspace as an absolute, lexically normalized path ("/home/u/ws"), for `normalize`.
pub(super) fn workspace_root(workspace: &Path) -> String {
    let abs = std::path::absolute(workspace).unwrap_or_else(|_| workspace.to_path_buf());
    let abs = abs.to_string_lossy();
    match normalize(&abs, "") {
        Ok(Location::Absolute(root)) => root,
        _ => abs.into_owned(),
    }
}

/// `path` relative to `dir` when `path` is `dir` or lies inside it ("" for `dir` itself); `None`
/// when `dir` is empty (no workspace to compare with).
fn strip_dir<'p>(path: &'p str, dir: &str) -> Option<&'p str> {
    let dir = dir.trim_end_matches('/');
    if dir.is_empty() {
        return None;
    }
    let rest = path.strip_prefix(dir)?;
    if rest.is_empty() {
        Some("")
    } else {
        rest.strip_prefix('/')
    }
}

/// The path itself, then each enclosing folder: "a/b/c" → "a/b/c", "a/b", "a".
pub(super) fn self_and_ancestors(path: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(path), |p| p.rfind('/').map(|i| &p[..i]))
}

/// Each folder enclosing `path`, innermost first: "a/b/c" → "a/b", "a".
pub(super) fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    self_and_ancestors(path).skip(1)
}

/// Paths vlmflow owns: an out may not be one of them or lie inside one.
pub(super) const RESERVED: [&str; 4] = ["Stagefile", "stages", "cache", ".git"];

/// The reserved entry `path` is or lies inside, if any.
pub(super) fn reserved_root(path: &str) -> Option<&'static str> {
    let first = path.split('/').next().unwrap_or("");
    RESERVED.iter().copied().find(|r| *r == first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &str) -> Location {
        Location::Relative(s.to_string())
    }

    #[test]
    fn normalizes_relative_paths() {
        assert_eq!(normalize("./a//b/", "/ws"), Ok(rel("a/b")));
        assert_eq!(normalize("a/../b", "/ws"), Ok(rel("b")));
        assert_eq!(normalize(".", "/ws"), Ok(rel("")));
        assert_eq!(normalize("a/../..", "/ws"), Err(PathError::LeavesWorkspace));
    }

    #[test]
    fn absolute_paths_stay_absolute_unless_inside_the_workspace() {
        let abs = Location::Absolute("/data/coco".to_string());
        assert_eq!(normalize("/data//coco/", "/ws"), Ok(abs));
        assert_eq!(normalize("/ws/data/x", "/ws"), Ok(rel("data/x")));
        assert_eq!(normalize("/ws", "/ws"), Ok(rel("")));
        let root = Location::Absolute("/a/b".into());
        assert_eq!(normalize("/a/./b/", ""), Ok(root));
        assert_eq!(workspace_root(Path::new("/a//b/../c/")), "/a/c");
        assert_eq!(
            normalize("/wsx/a", "/ws"),
            Ok(Location::Absolute("/wsx/a".into()))
        );
    }

    #[test]
    fn walks_ancestors() {
        let all: Vec<_> = self_and_ancestors("a/b/c").collect();
        assert_eq!(all, ["a/b/c", "a/b", "a"]);
        assert_eq!(ancestors("a").count(), 0);
        assert_eq!(reserved_root("cache/x"), Some("cache"));
        assert_eq!(reserved_root("caches"), None);
    }
}
