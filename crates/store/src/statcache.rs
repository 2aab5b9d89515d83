//! The stat cache: (dev, inode, size, mtime, ctime, mode) → digest, in the `stat_cache` table.
//!
//! A file whose stat matches its row is not read again. Rows are keyed by the path as spelled in
//! manifests ("data/raw/img_001.png", or absolute). Reads are one range query per snapshotted
//! folder loaded into a `HashMap` (20,000 rows in a few ms, several times faster than 20,000 point
//! queries); writes are batched in one savepoint with cached prepared statements.
//!
//! Every multi-row write runs inside `SAVEPOINT`/`RELEASE`, which behaves as a transaction of its
//! own when the caller has none open and nests inside the caller's transaction when it has one.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

use rusqlite::{Connection, params};

use super::{Digest, Result};

/// The parts of a file's stat that must all match for its cached digest to be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    /// `st_mode`, file type bits included.
    pub mode: u32,
}

impl Stat {
    pub fn from_metadata(m: &Metadata) -> Stat {
        Stat {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.mtime_nsec()),
            ctime_ns: m
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.ctime_nsec()),
            mode: m.mode(),
        }
    }
}

/// A stat-cache row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cached {
    pub stat: Stat,
    pub digest: Digest,
}

const SELECT: &str =
    "SELECT path, dev, ino, size, mtime_ns, ctime_ns, mode, digest FROM stat_cache";
const UPSERT: &str = "INSERT OR REPLACE INTO stat_cache (path, dev, ino, size, mtime_ns, ctime_ns, mode, digest) \
                      VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
const DELETE: &str = "DELETE FROM stat_cache WHERE path = ?1";

fn row_to_cached(row: &rusqlite::Row<'_>) -> rusqlite::Result<Option<(String, Cached)>> {
    let path: String = row.get(0)?;
    let Ok(digest) = <[u8; 32]>::try_from(row.get_ref(7)?.as_blob()?) else {
        return Ok(None); // a damaged row is a miss; the next write replaces it
    };
    let stat = Stat {
        dev: row.get::<_, i64>(1)? as u64,
        ino: row.get::<_, i64>(2)? as u64,
        size: row.get::<_, i64>(3)? as u64,
        mtime_ns: row.get(4)?,
        ctime_ns: row.get(5)?,
        mode: row.get::<_, i64>(6)? as u32,
    };
    Ok(Some((
        path,
        Cached {
            stat,
            digest: Digest(digest),
        },
    )))
}

/// The row for exactly `path`.
pub fn lookup(conn: &Connection, path: &str) -> Result<Option<Cached>> {
    let mut stmt = conn.prepare_cached(&format!("{SELECT} WHERE path = ?1"))?;
    let mut rows = stmt.query([path])?;
    match rows.next()? {
        Some(row) => Ok(row_to_cached(row)?.map(|(_, c)| c)),
        None => Ok(None),
    }
}

/// Adds to `into` the rows for `prefix` itself and every path inside it ("prefix/...").
pub fn load_under(
    conn: &Connection,
    prefix: &str,
    into: &mut HashMap<String, Cached>,
) -> Result<()> {
    // One index range scan: ["prefix", "prefix0") holds "prefix", "prefix/..." ('0' follows '/')
    // and a few siblings such as "prefix.txt", which are filtered out here.
    let (lo, hi) = range(prefix);
    let inside = format!("{lo}/");
    let mut stmt = conn.prepare_cached(&format!("{SELECT} WHERE path >= ?1 AND path < ?2"))?;
    let mut rows = stmt.query(params![lo, hi])?;
    while let Some(row) = rows.next()? {
        if let Some((path, cached)) = row_to_cached(row)?
            && (path == lo || path.starts_with(&inside))
        {
            into.insert(path, cached);
        }
    }
    Ok(())
}

/// The half-open key range holding `prefix` and everything inside it.
fn range(prefix: &str) -> (&str, String) {
    let lo = prefix.trim_end_matches('/');
    (lo, format!("{lo}0"))
}

/// Runs `f` inside a savepoint: committed (released) if it returns Ok, rolled back otherwise.
pub(crate) fn in_savepoint<T>(conn: &Connection, f: impl FnOnce() -> Result<T>) -> Result<T> {
    conn.execute_batch("SAVEPOINT vlmflow_stat_cache")?;
    match f() {
        Ok(v) => {
            conn.execute_batch("RELEASE vlmflow_stat_cache")?;
            Ok(v)
        }
        Err(e) => {
            let _ =
                conn.execute_batch("ROLLBACK TO vlmflow_stat_cache; RELEASE vlmflow_stat_cache");
            Err(e)
        }
    }
}

fn upsert(
    stmt: &mut rusqlite::CachedStatement<'_>,
    path: &str,
    stat: &Stat,
    digest: &Digest,
) -> Result<()> {
    stmt.execute(params![
        path,
        stat.dev as i64,
        stat.ino as i64,
        stat.size as i64,
        stat.mtime_ns,
        stat.ctime_ns,
        i64::from(stat.mode),
        &digest.0[..],
    ])?;
    Ok(())
}

/// Writes `upserts` and removes the rows of `deletes`, all in one savepoint.
pub fn update(conn: &Connection, upserts: &[(&str, Stat, Digest)], deletes: &[&str]) -> Result<()> {
    if upserts.is_empty() && deletes.is_empty() {
        return Ok(());
    }
    in_savepoint(conn, || {
        let mut del = conn.prepare_cached(DELETE)?;
        for path in deletes {
            del.execute([path])?;
        }
        let mut up = conn.prepare_cached(UPSERT)?;
        for (path, stat, digest) in upserts {
            upsert(&mut up, path, stat, digest)?;
        }
        Ok(())
    })
}

/// Removes the rows of `prefix` and of every path inside it; returns how many.
pub fn delete_under(conn: &Connection, prefix: &str) -> Result<usize> {
    // Paths inside "prefix" are exactly the range ["prefix/", "prefix0").
    let (lo, hi) = range(prefix);
    let exact = conn.prepare_cached(DELETE)?.execute([lo])?;
    let mut stmt = conn.prepare_cached("DELETE FROM stat_cache WHERE path >= ?1 AND path < ?2")?;
    Ok(exact + stmt.execute(params![format!("{lo}/"), hi])?)
}

/// Records a file whose digest is known with certainty (a file just placed from an immutable
/// object). No racy-timestamp check: the content cannot have changed since it was written.
pub fn record_known(
    conn: &Connection,
    path: &str,
    metadata: &Metadata,
    digest: &Digest,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(UPSERT)?;
    upsert(&mut stmt, path, &Stat::from_metadata(metadata), digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(include_str!("schema.sql")).unwrap();
        conn
    }

    fn stat(n: u64) -> Stat {
        Stat {
            dev: u64::MAX - 1,
            ino: n,
            size: n * 10,
            mtime_ns: -5,
            ctime_ns: 7,
            mode: 0o100644,
        }
    }

    #[test]
    fn upsert_lookup_load_delete() {
        let conn = db();
        let d = Digest::of_bytes(b"x");
        let paths = [
            "data", "data/a", "data/b/c", "data.txt", "data-x", "datab", "other/a",
        ];
        let rows: Vec<(&str, Stat, Digest)> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| (*p, stat(i as u64), d))
            .collect();
        update(&conn, &rows, &[]).unwrap();
        assert_eq!(
            lookup(&conn, "data/a").unwrap(),
            Some(Cached {
                stat: stat(1),
                digest: d
            })
        );
        assert_eq!(lookup(&conn, "nope").unwrap(), None);

        let mut map = HashMap::new();
        load_under(&conn, "data/", &mut map).unwrap();
        let mut keys: Vec<_> = map.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["data", "data/a", "data/b/c"]);

        update(&conn, &[("data/a", stat(9), d)], &["data/b/c"]).unwrap();
        assert_eq!(lookup(&conn, "data/a").unwrap().unwrap().stat, stat(9));
        assert_eq!(lookup(&conn, "data/b/c").unwrap(), None);

        assert_eq!(delete_under(&conn, "data").unwrap(), 2);
        assert!(lookup(&conn, "data.txt").unwrap().is_some());
        assert!(lookup(&conn, "datab").unwrap().is_some());
    }

    #[test]
    fn savepoint_nests_in_a_transaction_and_rolls_back() {
        let conn = db();
        let d = Digest::of_bytes(b"x");
        conn.execute_batch("BEGIN").unwrap();
        update(&conn, &[("a", stat(1), d)], &[]).unwrap();
        let r: Result<()> = in_savepoint(&conn, || {
            update(&conn, &[("b", stat(2), d)], &[])?;
            Err(crate::StoreError::Other("boom".into()))
        });
        assert!(r.is_err());
        conn.execute_batch("COMMIT").unwrap();
        assert!(lookup(&conn, "a").unwrap().is_some());
        assert!(lookup(&conn, "b").unwrap().is_none());
    }

    #[test]
    fn record_known_writes_the_files_stat() {
        let conn = db();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        let md = std::fs::metadata(&p).unwrap();
        let d = Digest::of_bytes(b"hello");
        record_known(&conn, "out/f", &md, &d).unwrap();
        let row = lookup(&conn, "out/f").unwrap().unwrap();
        assert_eq!(row.stat, Stat::from_metadata(&md));
        assert_eq!(row.digest, d);
    }
}
