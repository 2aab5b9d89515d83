//! Placing an artifact in the workspace: read-only files by reflink, else hardlink, else copy.

use super::*;

/// How `materialize` places files; decided on the first file of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    /// Untried.
    Unknown,
    /// Reflink failed; hardlink untried (the files so far were executable, so copied).
    NoReflink,
    Reflink,
    Hardlink,
    Copy,
}

impl Cas {
    /// Make the workspace hold exactly `manifest` at the top-level `outs` under `root`: remove what is
    /// there now, recreate folders, and place files read-only by reflink, else hardlink, else copy.
    /// Records the placed files in the stat cache so the next snapshot does not read them.
    ///
    /// An out the manifest holds nothing for is removed and left absent. Executable files are
    /// never hard-linked (the object's inode is 0444 and shared): they are reflinked or copied.
    /// Folders are created writable (0777 less umask).
    pub fn materialize(
        &self,
        conn: &rusqlite::Connection,
        manifest: &Manifest,
        root: &Path,
        outs: &[String],
    ) -> Result<()> {
        let mut method = Method::Unknown;
        let mut placed: Vec<(String, Digest, u64)> = Vec::new();
        let mut spelled_outs = Vec::new();
        for given in outs {
            let spelled = normalize_path(given)?;
            let full = root.join(&spelled);
            remove_any(&full)?;
            let sub = manifest.under(&spelled);
            spelled_outs.push(spelled.clone());
            if sub.is_empty() {
                continue;
            }
            if let Some(parent) = full.parent() {
                fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            let mut files = Vec::new();
            // Byte order puts every folder before what it holds.
            for e in sub.entries() {
                let rest = &e.path[spelled.len()..];
                if rest
                    .split('/')
                    .skip(1)
                    .any(|c| c.is_empty() || c == "." || c == "..")
                {
                    return Err(StoreError::Other(format!(
                        "manifest entry `{}` is not a plain path; refusing to materialize it",
                        e.path
                    )));
                }
                let dst = root.join(&e.path);
                match &e.node {
                    Node::Dir => fs::create_dir(&dst).map_err(io_err(&dst))?,
                    Node::Symlink { target } => {
                        std::os::unix::fs::symlink(target, &dst).map_err(io_err(&dst))?
                    }
                    Node::File {
                        digest,
                        size,
                        executable,
                    } => files.push((e.path.as_str(), *digest, *size, *executable)),
                }
            }
            // The first files decide the method; the rest follow it in parallel.
            let mut i = 0;
            while i < files.len() && matches!(method, Method::Unknown | Method::NoReflink) {
                let (path, digest, _, exec) = files[i];
                method = self.place_probe(&root.join(path), &digest, exec, method)?;
                i += 1;
            }
            files[i..]
                .par_iter()
                .try_for_each(|(path, digest, _, exec)| {
                    self.place(&root.join(path), digest, *exec, method)
                })?;
            placed.extend(files.iter().map(|(p, d, s, _)| (p.to_string(), *d, *s)));
        }

        // Stat after every placement: a hard link changes the shared inode's ctime.
        let stats = placed
            .par_iter()
            .map(|(path, digest, size)| {
                let dst = root.join(path);
                let md = fs::symlink_metadata(&dst).map_err(io_err(&dst))?;
                if md.len() != *size {
                    return Err(StoreError::CorruptObject(*digest));
                }
                Ok(Stat::from_metadata(&md))
            })
            .collect::<Result<Vec<_>>>()?;
        statcache::in_savepoint(conn, || {
            for spelled in &spelled_outs {
                statcache::delete_under(conn, spelled)?;
            }
            let rows: Vec<(&str, Stat, Digest)> = placed
                .iter()
                .zip(&stats)
                .map(|((p, d, _), s)| (p.as_str(), *s, *d))
                .collect();
            statcache::update(conn, &rows, &[])
        })
    }

    /// Places one file trying methods in order; returns the method that is now decided (or
    /// `NoReflink` while only executables, which are never hard-linked, have been placed).
    fn place_probe(
        &self,
        dst: &Path,
        digest: &Digest,
        exec: bool,
        method: Method,
    ) -> Result<Method> {
        let src = self.object_path(digest);
        let mode = if exec { 0o555 } else { 0o444 };
        if method == Method::Unknown {
            match reflink_file(&src, dst, mode) {
                Ok(()) => return Ok(Method::Reflink),
                Err(e) if errno_is(&e, UNSUPPORTED) => {}
                Err(e) => return Err(self.place_error(e, dst, digest)),
            }
        }
        if exec {
            copy_file(&src, dst, mode).map_err(|e| self.place_error(e, dst, digest))?;
            return Ok(Method::NoReflink);
        }
        match fs::hard_link(&src, dst) {
            Ok(()) => Ok(Method::Hardlink),
            Err(e) if errno_is(&e, UNSUPPORTED) => {
                copy_file(&src, dst, mode).map_err(|e| self.place_error(e, dst, digest))?;
                Ok(Method::Copy)
            }
            Err(e) => Err(self.place_error(e, dst, digest)),
        }
    }

    fn place(&self, dst: &Path, digest: &Digest, exec: bool, method: Method) -> Result<()> {
        let src = self.object_path(digest);
        let mode = if exec { 0o555 } else { 0o444 };
        let r = match method {
            Method::Reflink => reflink_file(&src, dst, mode),
            Method::Hardlink if !exec => fs::hard_link(&src, dst),
            _ => copy_file(&src, dst, mode),
        };
        match r {
            Ok(()) => Ok(()),
            // One file that cannot be linked (EMLINK: too many links to one inode) is copied.
            Err(e) if method != Method::Copy && errno_is(&e, UNSUPPORTED) => {
                copy_file(&src, dst, mode).map_err(|e| self.place_error(e, dst, digest))
            }
            Err(e) => Err(self.place_error(e, dst, digest)),
        }
    }

    fn place_error(&self, e: io::Error, dst: &Path, digest: &Digest) -> StoreError {
        if e.kind() == io::ErrorKind::NotFound && !self.object_path(digest).exists() {
            StoreError::CorruptObject(*digest)
        } else {
            io_err(dst)(e)
        }
    }
}
