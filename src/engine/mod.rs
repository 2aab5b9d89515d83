//! The engine: Stagefile, DAG, keys, freshness, scheduling. It never imports `ml`.

pub mod diagnostic;
pub mod stagefile;
