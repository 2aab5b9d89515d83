//! The store: content-addressed objects and manifests under `cache/`, the hashing of workspace
//! paths (with a stat cache), the run records (objects, `run_record.rs`) and the SQLite database
//! that indexes them ([`db::Db`]), rebuilt from the records when it is lost (`index_rebuild.rs`).
//! Its seam is [`ObjectStore`], where objects are kept: today [`LocalObjects`], the folder
//! `cache/objects/`; a shared bucket is meant to be the next one.

pub mod cas;
pub mod db;
pub mod digest;
mod files;
pub mod hash;
pub mod index_rebuild;
pub mod manifest;
pub mod object_store;
pub mod remote;
pub mod run_record;
pub mod run_status;
pub mod statcache;
pub mod sweeps;
mod walk;

pub use cas::Cas;
pub use digest::Digest;
pub use manifest::{Entry, Manifest, Node};
pub use object_store::{LocalObjects, ObjectStore};

/// Errors of the store. Each names the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} does not exist")]
    Missing(String),
    #[error(
        "cache object {0} is missing or corrupt: run `vlmflow build --force` on the stage that produced it"
    )]
    CorruptObject(Digest),
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Attach a path to an io::Error.
pub fn io_err(path: impl Into<std::path::PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io { path, source }
}
