//! Packs: the many small files of one artifact sent as a few large remote objects. One request per
//! 4 KiB file is what makes a 20,000-file artifact slow on any object store (DVC's push and ours
//! alike were bound by the server's per-request cost); a pack of up to 8 MiB is one request.
//!
//! ```text
//! packs/<2 hex>/<62 hex>       files end to end, named by the blake3 of the whole pack
//! pack-index/<manifest>        JSON: for each pack, the files it holds, their offsets and sizes
//! ```
//!
//! Which files travel packed follows from the manifest alone ([`transfer_plan`]), and the packs
//! are a deterministic function of those files: two machines pushing one artifact write the same
//! names with the same bytes, and a puller knows to ask for the index. The index is written after
//! its packs. A file cut out of a pack is hashed before it is kept, like a loose object. A small
//! file shared by two artifacts may sit in both artifacts' packs: packing trades that duplication
//! for one request per 8 MiB.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as RemotePath;
use object_store::{ObjectStoreExt, PutPayload};

use super::{Moved, OnMoved, PART, Remote};
use crate::manifest::{Manifest, Node};
use crate::object_store::PutFile;
use crate::{Cas, Digest, Result, StoreError, io_err};

/// Files at most this large may travel packed.
const PACKED_FILE_MAX: u64 = 1 << 20;
/// An artifact's small files travel packed when it has more than this many.
const PACK_OVER: usize = 32;
/// A pack is at most this large: one request.
const PACK_MAX: u64 = PART as u64;
/// Packs in flight at once (each up to `PACK_MAX` in memory).
const PACKS_IN_FLIGHT: usize = 4;
const INDEX_FORMAT: &str = "vlmflow-pack-index/1";

/// How the files of one manifest travel.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TransferPlan {
    /// Objects sent one request each.
    pub loose: Vec<Digest>,
    /// Small files sent in packs, with their sizes, in pack order; empty when too few to pack.
    pub packed: Vec<(Digest, u64)>,
}

/// Splits a manifest's files into those that travel loose and those that travel packed.
pub fn transfer_plan(manifest: &Manifest) -> TransferPlan {
    let mut small = Vec::new();
    let mut large = Vec::new();
    for entry in manifest.entries() {
        if let Node::File { digest, size, .. } = entry.node {
            if size <= PACKED_FILE_MAX {
                small.push((digest, size));
            } else {
                large.push(digest);
            }
        }
    }
    small.sort();
    small.dedup();
    large.sort();
    large.dedup();
    if small.len() <= PACK_OVER {
        large.extend(small.drain(..).map(|(d, _)| d));
    }
    TransferPlan {
        loose: large,
        packed: small,
    }
}

/// The packs of `files` (in pack order): consecutive runs of at most `PACK_MAX` bytes.
fn pack_groups(files: &[(Digest, u64)]) -> Vec<&[(Digest, u64)]> {
    let mut groups = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, (_, file_size)) in files.iter().enumerate() {
        if i > start && size + file_size > PACK_MAX {
            groups.push(&files[start..i]);
            (start, size) = (i, 0);
        }
        size += file_size;
    }
    if start < files.len() {
        groups.push(&files[start..]);
    }
    groups
}

#[derive(serde::Serialize, serde::Deserialize)]
struct PackIndex {
    format: String,
    packs: Vec<PackEntry>,
}

/// A file in a pack: (its digest, offset, size).
type PackedFile = (Digest, u64, u64);

#[derive(serde::Serialize, serde::Deserialize)]
struct PackEntry {
    pack: Digest,
    files: Vec<PackedFile>,
}

impl Remote {
    fn pack_path(&self, pack: &Digest) -> RemotePath {
        self.fanned_path("packs", pack)
    }

    fn pack_index_path(&self, manifest: &Digest) -> RemotePath {
        self.prefix
            .clone()
            .join("pack-index")
            .join(manifest.to_hex())
    }

    /// Whether the remote holds the packs of `manifest` (their index is written after them).
    pub fn holds_packs(&self, manifest: &Digest) -> Result<bool> {
        self.runtime
            .block_on(self.exists(&self.pack_index_path(manifest)))
    }

    /// Sends `files` (a [`TransferPlan`]'s `packed`) as the packs of `manifest`, then their index.
    /// A pack already there is not sent again (an interrupted push resumes).
    pub fn upload_packs(
        &self,
        cas: &Cas,
        manifest: &Digest,
        files: &[(Digest, u64)],
        on_moved: OnMoved<'_>,
    ) -> Result<Moved> {
        let index_path = self.pack_index_path(manifest);
        self.runtime.block_on(async {
            let sent: Vec<(PackEntry, Moved)> = futures::stream::iter(pack_groups(files))
                .map(|group| self.upload_pack(cas, group, on_moved))
                .buffered(PACKS_IN_FLIGHT)
                .try_collect()
                .await?;
            let (packs, moved): (Vec<PackEntry>, Vec<Moved>) = sent.into_iter().unzip();
            let index = PackIndex {
                format: INDEX_FORMAT.into(),
                packs,
            };
            let json = serde_json::to_vec(&index).expect("a pack index serializes");
            self.put_new(&index_path, PutPayload::from(json)).await?;
            Ok(moved.into_iter().fold(Moved::default(), |a, b| a + b))
        })
    }

    async fn upload_pack(
        &self,
        cas: &Cas,
        files: &[(Digest, u64)],
        on_moved: OnMoved<'_>,
    ) -> Result<(PackEntry, Moved)> {
        let mut pack = Vec::with_capacity(files.iter().map(|(_, s)| *s as usize).sum());
        let mut entry = PackEntry {
            pack: Digest::of_bytes(&[]),
            files: Vec::with_capacity(files.len()),
        };
        for (digest, _) in files {
            let offset = pack.len();
            cas.open_object(digest)?
                .ok_or(StoreError::CorruptObject(*digest))?
                .read_to_end(&mut pack)
                .map_err(|e| StoreError::Other(format!("reading object {digest}: {e}")))?;
            if Digest::of_bytes(&pack[offset..]) != *digest {
                return Err(self.damaged_here(*digest));
            }
            let size = (pack.len() - offset) as u64;
            entry.files.push((*digest, offset as u64, size));
        }
        entry.pack = Digest::of_bytes(&pack);
        let moved = Moved {
            objects: files.len() as u64,
            bytes: pack.len() as u64,
            packs: 1,
        };
        let path = self.pack_path(&entry.pack);
        if !self.exists(&path).await? {
            self.put_new(&path, PutPayload::from(pack)).await?;
        }
        on_moved(moved);
        Ok((entry, moved))
    }

    /// Fetches those of `wanted` that the packs of `manifest` hold into the local cache, each
    /// checked against its digest; returns what moved and the files still wanted (all of them
    /// when the remote has no index for `manifest`, as for a push by an older vlmflow).
    pub fn download_packed(
        &self,
        cas: &Cas,
        manifest: &Digest,
        wanted: &[Digest],
        on_moved: OnMoved<'_>,
    ) -> Result<(Moved, Vec<Digest>)> {
        let Some(index) = self.read_pack_index(manifest)? else {
            return Ok((Moved::default(), wanted.to_vec()));
        };
        let mut rest: HashSet<Digest> = wanted.iter().copied().collect();
        let mut from_packs: Vec<(Digest, Vec<PackedFile>)> = Vec::new();
        for PackEntry { pack, files } in index.packs {
            let needed: Vec<_> = files.into_iter().filter(|f| rest.remove(&f.0)).collect();
            if !needed.is_empty() {
                from_packs.push((pack, needed));
            }
        }
        // Files of a pack that is gone may still be there loose.
        let mut lost = Vec::new();
        let moved = self.download_into(cas, |tmp| {
            let lost = &mut lost;
            async move {
                let per_pack: Vec<Option<Vec<(PutFile, Moved)>>> =
                    futures::stream::iter(&from_packs)
                        .map(|(pack, files)| self.download_from_pack(&tmp, pack, files, on_moved))
                        .buffered(PACKS_IN_FLIGHT)
                        .try_collect()
                        .await?;
                let mut got = Vec::new();
                for ((_, files), fetched) in from_packs.iter().zip(per_pack) {
                    match fetched {
                        Some(fetched) => got.extend(fetched),
                        None => lost.extend(files.iter().map(|f| f.0)),
                    }
                }
                Ok(got)
            }
        })?;
        let mut rest: Vec<Digest> = rest.into_iter().chain(lost).collect();
        rest.sort();
        Ok((moved, rest))
    }

    fn read_pack_index(&self, manifest: &Digest) -> Result<Option<PackIndex>> {
        let path = self.pack_index_path(manifest);
        let bytes = self.runtime.block_on(async {
            match self.bucket.get(&path).await {
                Ok(got) => got.bytes().await.map(Some).map_err(|e| self.fail(e)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.fail(e)),
            }
        })?;
        let Some(bytes) = bytes else { return Ok(None) };
        match serde_json::from_slice::<PackIndex>(&bytes) {
            Ok(index) if index.format == INDEX_FORMAT => Ok(Some(index)),
            Ok(index) => Err(self.fail(format!(
                "{path} is a pack index of format `{}`, which this vlmflow does not read: update vlmflow",
                index.format
            ))),
            Err(e) => Err(self.fail(format!(
                "{path} is not a readable pack index ({e}): delete it and push the artifact again"
            ))),
        }
    }

    /// The `files` (file, offset, size) of `pack`, each written to `tmp` once it hashes right;
    /// `None` when the pack is missing. Nearby ranges are read in one request.
    async fn download_from_pack(
        &self,
        tmp: &Path,
        pack: &Digest,
        files: &[PackedFile],
        on_moved: OnMoved<'_>,
    ) -> Result<Option<Vec<(PutFile, Moved)>>> {
        let ranges: Vec<_> = files.iter().map(|(_, o, s)| *o..o + s).collect();
        let parts = match self.bucket.get_ranges(&self.pack_path(pack), &ranges).await {
            Ok(parts) => parts,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.fail(e)),
        };
        let mut got = Vec::with_capacity(files.len());
        for ((digest, _, _), bytes) in files.iter().zip(parts) {
            if Digest::of_bytes(&bytes) != *digest {
                return Err(self.altered(*digest));
            }
            let path = tmp.join(digest.to_hex());
            std::fs::write(&path, &bytes).map_err(io_err(&path))?;
            let file = PutFile {
                path,
                digest: *digest,
            };
            got.push((file, Moved::object(bytes.len() as u64)));
        }
        if let Some((_, first)) = got.first_mut() {
            first.packs = 1;
        }
        on_moved(got.iter().fold(Moved::default(), |sum, (_, m)| sum + *m));
        Ok(Some(got))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Entry;

    fn file(i: u32, size: u64) -> Entry {
        Entry {
            path: format!("f{i}"),
            node: Node::File {
                digest: Digest::of_bytes(&i.to_le_bytes()),
                size,
                executable: false,
            },
        }
    }

    #[test]
    fn a_few_small_files_travel_loose_many_travel_packed_and_large_ones_always_loose() {
        let few = Manifest::new((0..PACK_OVER as u32).map(|i| file(i, 10)).collect());
        let plan = transfer_plan(&few);
        assert_eq!((plan.loose.len(), plan.packed.len()), (PACK_OVER, 0));

        let mut entries: Vec<_> = (0..100).map(|i| file(i, 4096)).collect();
        entries.push(file(1000, PACKED_FILE_MAX + 1));
        let plan = transfer_plan(&Manifest::new(entries));
        assert_eq!((plan.loose.len(), plan.packed.len()), (1, 100));
        assert!(plan.packed.is_sorted(), "the packs do not depend on paths");
    }

    #[test]
    fn packs_hold_at_most_one_request_and_every_file_once() {
        let files: Vec<(Digest, u64)> = (0..40u32)
            .map(|i| (Digest::of_bytes(&i.to_le_bytes()), PACKED_FILE_MAX))
            .collect();
        let groups = pack_groups(&files);
        assert_eq!(groups.len(), 5);
        assert!(
            groups
                .iter()
                .all(|g| g.iter().map(|f| f.1).sum::<u64>() <= PACK_MAX)
        );
        assert_eq!(groups.concat(), files);
        assert!(pack_groups(&[]).is_empty());
    }
}
