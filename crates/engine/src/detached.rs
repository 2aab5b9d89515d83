//! Building off the workspace, as a sweep's trials do: outs are placed in a scratch folder and
//! runs are kept in the run-cache, while the workspace's outs and its state (`stage_state`) stay
//! as they are. A needed stage the workspace already holds is read where it is.
//!
//! Two stages of one such build may have the same key (trials whose differing params made equal
//! artifacts upstream): each claims the key before running it, so one runs and the other waits and
//! then restores what it made.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use vlmflow_store::Digest;

pub struct Detached {
    /// Per stage (by index in the pipeline built): the folder its outs are placed in.
    roots: Vec<PathBuf>,
    /// Per stage: what its name is shown after (a sweep's trials: `#2 `, `#1-4 `).
    labels: Vec<String>,
    pub(crate) claims: KeyClaims,
    /// The stages whose artifact this build placed in their root.
    placed: Mutex<HashSet<usize>>,
}

impl Detached {
    pub fn new(roots: Vec<PathBuf>, labels: Vec<String>) -> Detached {
        Detached {
            roots,
            labels,
            claims: KeyClaims::default(),
            placed: Mutex::new(HashSet::new()),
        }
    }

    pub(crate) fn root(&self, index: usize) -> &Path {
        &self.roots[index]
    }

    pub(crate) fn label(&self, index: usize) -> &str {
        &self.labels[index]
    }

    pub(crate) fn placed(&self, index: usize) {
        self.lock().insert(index);
    }

    /// Where stage `index`'s outs are: its root when this build placed them, else in `workspace`.
    pub(crate) fn root_of<'r>(&'r self, index: usize, workspace: &'r Path) -> &'r Path {
        if self.lock().contains(&index) {
            &self.roots[index]
        } else {
            workspace
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<usize>> {
        self.placed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The stage keys being run now.
#[derive(Default)]
pub struct KeyClaims {
    held: Mutex<HashSet<Digest>>,
    freed: Condvar,
}

/// Held while a key runs; dropping it lets those waiting for the key go on.
pub struct Claim<'a> {
    claims: &'a KeyClaims,
    key: Digest,
}

impl KeyClaims {
    /// Claim `key`, first waiting for whoever holds it to let it go.
    pub fn claim(&self, key: Digest) -> Claim<'_> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        while held.contains(&key) {
            held = self.freed.wait(held).unwrap_or_else(|e| e.into_inner());
        }
        held.insert(key);
        Claim { claims: self, key }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut held = self.claims.held.lock().unwrap_or_else(|e| e.into_inner());
        held.remove(&self.key);
        self.claims.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn one_at_a_time_holds_a_key() {
        let claims = KeyClaims::default();
        let key = Digest::of_bytes(b"stage key");
        let inside = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let _claim = claims.claim(key);
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    inside.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 1);
        // Another key is not held up by it.
        let _a = claims.claim(key);
        let _b = claims.claim(Digest::of_bytes(b"other"));
    }
}
