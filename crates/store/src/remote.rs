//! A remote cache: the same content-addressed objects as `cache/objects/` and the refs of the run
//! records, kept in object storage through the `object_store` crate — S3 and S3-compatible
//! servers (`s3://bucket/prefix`), a shared folder (`file:///path`), GCS and Azure. Credentials
//! come from the environment (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`, …) and the AWS profile
//! files (`aws_profile`), never from a Stagefile.
//!
//! Layout under the URL's prefix:
//!
//! ```text
//! objects/<2 hex>/<62 hex>     an object (a file, manifest or run record), named by its blake3
//! packs/<2 hex>/<62 hex>       many small files of one artifact end to end (see `packs`)
//! pack-index/<manifest>        where each packed file of that artifact's manifest is
//! runs/<key>/<record digest>   empty: the records a key has (written last, after what they name)
//! ```
//!
//! Every object read back is hashed before it is kept, so a remote that serves wrong bytes cannot
//! poison the local cache. Writes are create-only (`If-None-Match: *` on S3): two machines pushing
//! one object at once is harmless, and an interrupted push leaves only whole objects behind.

use std::io::{Read, Write};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as RemotePath;
use object_store::{
    ObjectStore as Bucket, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart,
};

use super::object_store::PutFile;
use super::{Cas, Digest, Result, StoreError, io_err};

mod aws_profile;
mod packs;
pub use packs::{TransferPlan, transfer_plan};

/// Objects at most this large go up in one request; larger ones in parts of this size.
const PART: usize = 8 << 20;
/// Requests in flight at once.
const CONCURRENCY: usize = 16;
/// Parts of one large object in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Past this many objects, what the remote holds is listed rather than asked one by one.
const LIST_OVER: usize = 256;

pub struct Remote {
    url: String,
    bucket: Arc<dyn Bucket>,
    prefix: RemotePath,
    runtime: tokio::runtime::Runtime,
}

/// What a transfer moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub objects: u64,
    pub bytes: u64,
    /// Packs among the requests (each holding many of the objects).
    pub packs: u64,
}

impl std::ops::Add for Moved {
    type Output = Moved;
    fn add(self, other: Moved) -> Moved {
        Moved {
            objects: self.objects + other.objects,
            bytes: self.bytes + other.bytes,
            packs: self.packs + other.packs,
        }
    }
}

impl Moved {
    fn object(bytes: u64) -> Moved {
        Moved {
            objects: 1,
            bytes,
            packs: 0,
        }
    }

    fn bytes(bytes: u64) -> Moved {
        Moved {
            bytes,
            ..Moved::default()
        }
    }
}

/// Told of each piece of a transfer as it lands (the bytes of a part or chunk, then each whole
/// object or pack), from any of the transfer's tasks: what a progress display needs.
pub type OnMoved<'a> = &'a (dyn Fn(Moved) + Sync);

impl Remote {
    /// The remote at `url`; nothing is contacted yet.
    pub fn open(url: &str) -> Result<Remote> {
        let fail = |why: String| StoreError::Other(format!("remote `{url}`: {why}"));
        let parsed = url::Url::parse(url).map_err(|e| {
            fail(format!(
                "{e}: write it as s3://bucket/prefix, file:///absolute/path, gs://… or az://…"
            ))
        })?;
        let (bucket, prefix): (Arc<dyn Bucket>, RemotePath) = match parsed.scheme() {
            "s3" | "s3a" => {
                let s3 = s3_builder(url)
                    .map_err(fail)?
                    .build()
                    .map_err(|e| fail(e.to_string()))?;
                (Arc::new(s3), RemotePath::from(parsed.path()))
            }
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| fail("not an absolute path".into()))?;
                std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
                let local = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| fail(e.to_string()))?;
                (Arc::new(local), RemotePath::default())
            }
            _ => {
                let env = std::env::vars().map(|(k, v)| (k.to_ascii_lowercase(), v));
                let (store, path) =
                    object_store::parse_url_opts(&parsed, env).map_err(|e| fail(e.to_string()))?;
                (Arc::from(store), path)
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .map_err(|e| fail(e.to_string()))?;
        Ok(Remote {
            url: url.to_string(),
            bucket,
            prefix,
            runtime,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn fail(&self, what: impl std::fmt::Display) -> StoreError {
        StoreError::Other(format!("remote {}: {what}", self.url))
    }

    fn object_path(&self, digest: &Digest) -> RemotePath {
        self.fanned_path("objects", digest)
    }

    /// `<dir>/<2 hex>/<62 hex>` under the prefix.
    fn fanned_path(&self, dir: &str, digest: &Digest) -> RemotePath {
        let hex = digest.to_hex();
        self.prefix
            .clone()
            .join(dir)
            .join(&hex[..2])
            .join(&hex[2..])
    }

    fn runs_path(&self, key: &Digest) -> RemotePath {
        self.prefix.clone().join("runs").join(key.to_hex())
    }

    /// Those of `digests` the remote does not hold, in the order given: one request each for a
    /// few, a listing of the remote's objects (a thousand names a request) for many.
    pub fn missing(&self, digests: &[Digest]) -> Result<Vec<Digest>> {
        if digests.len() > LIST_OVER {
            let held = self.listed_objects()?;
            return Ok(digests
                .iter()
                .filter(|d| !held.contains(d))
                .copied()
                .collect());
        }
        self.runtime.block_on(async {
            let found: Vec<Option<Digest>> = futures::stream::iter(digests)
                .map(|d| async move {
                    let held = self.exists(&self.object_path(d)).await?;
                    Ok::<_, StoreError>((!held).then_some(*d))
                })
                .buffered(CONCURRENCY)
                .try_collect()
                .await?;
            Ok(found.into_iter().flatten().collect())
        })
    }

    /// Every object the remote holds.
    fn listed_objects(&self) -> Result<std::collections::HashSet<Digest>> {
        let listed = self.list_under(&self.prefix.clone().join("objects"))?;
        Ok(listed
            .iter()
            .filter_map(|name| {
                let mut parts: Vec<_> = name.parts().collect();
                let rest = parts.pop()?;
                let fan = parts.pop()?;
                format!("{}{}", fan.as_ref(), rest.as_ref()).parse().ok()
            })
            .collect())
    }

    /// The names of everything under `dir`.
    fn list_under(&self, dir: &RemotePath) -> Result<Vec<RemotePath>> {
        self.runtime.block_on(async {
            self.bucket
                .list(Some(dir))
                .map_ok(|meta| meta.location)
                .try_collect()
                .await
                .map_err(|e| self.fail(e))
        })
    }

    /// Copies objects from the local cache up, many at once; each is hashed as it is read, and
    /// one whose local copy no longer matches its digest is not sent.
    pub fn upload(&self, cas: &Cas, digests: &[Digest], on_moved: OnMoved<'_>) -> Result<Moved> {
        self.runtime.block_on(async {
            futures::stream::iter(digests)
                .map(|d| self.upload_one(cas, *d, on_moved))
                .buffer_unordered(CONCURRENCY)
                .try_fold(Moved::default(), |sum, bytes| async move {
                    Ok(sum + Moved::object(bytes))
                })
                .await
        })
    }

    async fn upload_one(&self, cas: &Cas, digest: Digest, on_moved: OnMoved<'_>) -> Result<u64> {
        let mut reader = cas
            .open_object(&digest)?
            .ok_or(StoreError::CorruptObject(digest))?;
        let path = self.object_path(&digest);
        let mut hasher = blake3::Hasher::new();
        let mut first = read_part(&mut reader, digest)?;
        hasher.update(&first);
        if first.len() < PART {
            if Digest::from(hasher.finalize()) != digest {
                return Err(self.damaged_here(digest));
            }
            let size = first.len() as u64;
            self.put_new(&path, PutPayload::from(first)).await?;
            on_moved(Moved::object(size));
            return Ok(size);
        }
        let upload = self
            .bucket
            .put_multipart(&path)
            .await
            .map_err(|e| self.fail(e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut size = 0u64;
        while !first.is_empty() {
            writer
                .wait_for_capacity(PARTS_IN_FLIGHT)
                .await
                .map_err(|e| self.fail(e))?;
            writer.write(&first);
            size += first.len() as u64;
            on_moved(Moved::bytes(first.len() as u64));
            first = read_part(&mut reader, digest)?;
            hasher.update(&first);
        }
        // Only a whole, correct object gets a name on the remote.
        if Digest::from(hasher.finalize()) != digest {
            let _ = writer.abort().await;
            return Err(self.damaged_here(digest));
        }
        writer.finish().await.map_err(|e| self.fail(e))?;
        on_moved(Moved::object(0));
        Ok(size)
    }

    /// Copies objects down into the local cache, many at once; each is hashed on the way and kept
    /// only when it matches its digest.
    pub fn download(&self, cas: &Cas, digests: &[Digest], on_moved: OnMoved<'_>) -> Result<Moved> {
        if digests.is_empty() {
            return Ok(Moved::default());
        }
        self.download_into(cas, |tmp| async move {
            futures::stream::iter(digests)
                .map(|d| self.download_one(&tmp, *d, on_moved))
                .buffer_unordered(CONCURRENCY)
                .try_collect::<Vec<_>>()
                .await
        })
    }

    /// Runs `fetch`, which writes checked objects into a fresh folder of `cache/tmp/`, then takes
    /// them all into the cache at once: many small files are made durable together, not one by one.
    fn download_into<F, Fut>(&self, cas: &Cas, fetch: F) -> Result<Moved>
    where
        F: FnOnce(std::path::PathBuf) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<(PutFile, Moved)>>>,
    {
        let tmp = cas.temp_dir()?;
        let fetched = self.runtime.block_on(fetch(tmp.clone()));
        let taken = fetched.and_then(|fetched| {
            let (files, moved): (Vec<PutFile>, Vec<Moved>) = fetched.into_iter().unzip();
            cas.take_in(&files)?;
            Ok(moved.into_iter().fold(Moved::default(), |a, b| a + b))
        });
        let _ = std::fs::remove_dir_all(&tmp);
        taken
    }

    async fn download_one(
        &self,
        tmp: &std::path::Path,
        digest: Digest,
        on_moved: OnMoved<'_>,
    ) -> Result<(PutFile, Moved)> {
        let got = match self.bucket.get(&self.object_path(&digest)).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(self.fail(format!("object {digest} is missing")));
            }
            Err(e) => return Err(self.fail(e)),
        };
        let path = tmp.join(digest.to_hex());
        let mut file = std::fs::File::create(&path).map_err(io_err(&path))?;
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        let mut chunks = got.into_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| self.fail(e))?;
            hasher.update(&chunk);
            file.write_all(&chunk).map_err(io_err(&path))?;
            size += chunk.len() as u64;
            on_moved(Moved::bytes(chunk.len() as u64));
        }
        if Digest::from(hasher.finalize()) != digest {
            return Err(self.altered(digest));
        }
        on_moved(Moved::object(0));
        Ok((PutFile { path, digest }, Moved::object(size)))
    }

    /// The local copy of `digest` no longer hashes to it: it is not sent.
    fn damaged_here(&self, digest: Digest) -> StoreError {
        self.fail(format!(
            "the local copy of object {digest} does not match its digest: not sent \
             (`vlmflow verify --repair` quarantines it)"
        ))
    }

    fn altered(&self, digest: Digest) -> StoreError {
        self.fail(format!(
            "object {digest} came back with other content: not kept (the remote copy is damaged \
             or was altered)"
        ))
    }

    /// Writes `payload` at `path` unless something is there already (then it is the same bytes:
    /// every name on the remote is a digest of what it names).
    async fn put_new(&self, path: &RemotePath, payload: PutPayload) -> Result<()> {
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self.bucket.put_opts(path, payload, create).await {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Whether something is at `path`.
    async fn exists(&self, path: &RemotePath) -> Result<bool> {
        match self.bucket.head(path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// The records the remote holds for `key`.
    pub fn record_refs(&self, key: &Digest) -> Result<Vec<Digest>> {
        Ok(self
            .list_under(&self.runs_path(key))?
            .iter()
            .filter_map(|name| name.filename()?.parse().ok())
            .collect())
    }

    /// Names `record` as a record of `key`. Write it after everything the record names.
    pub fn add_record_ref(&self, key: &Digest, record: &Digest) -> Result<()> {
        let path = self.runs_path(key).join(record.to_hex());
        self.runtime
            .block_on(self.put_new(&path, PutPayload::default()))
    }
}

/// S3 settings from the environment, and where it says nothing, from the AWS profile.
fn s3_builder(url: &str) -> std::result::Result<object_store::aws::AmazonS3Builder, String> {
    use aws_profile::env;
    let mut builder = object_store::aws::AmazonS3Builder::from_env().with_url(url);
    let profile = aws_profile::load()?.unwrap_or_default();
    if env("AWS_ACCESS_KEY_ID").is_none()
        && let (Some(id), Some(secret)) = (profile.access_key_id, profile.secret_access_key)
    {
        builder = builder
            .with_access_key_id(id)
            .with_secret_access_key(secret);
        if let Some(token) = profile.session_token {
            builder = builder.with_token(token);
        }
    }
    if env("AWS_REGION").is_none()
        && env("AWS_DEFAULT_REGION").is_none()
        && let Some(region) = profile.region
    {
        builder = builder.with_region(region);
    }
    let endpoint = env("AWS_ENDPOINT_URL").or_else(|| env("AWS_ENDPOINT"));
    let endpoint = match (endpoint, profile.endpoint_url) {
        (Some(from_env), _) => Some(from_env),
        (None, Some(from_profile)) => {
            builder = builder.with_endpoint(&from_profile);
            Some(from_profile)
        }
        (None, None) => None,
    };
    // A server on plain HTTP (a local S3-compatible one) is allowed when named so.
    if endpoint.is_some_and(|e| e.starts_with("http://")) {
        builder = builder.with_allow_http(true);
    }
    Ok(builder)
}

/// Up to `PART` bytes; fewer only at the end.
fn read_part(reader: &mut (dyn Read + Send), digest: Digest) -> Result<Vec<u8>> {
    let mut part = Vec::with_capacity(PART);
    reader
        .take(PART as u64)
        .read_to_end(&mut part)
        .map_err(|e| StoreError::Other(format!("reading object {digest}: {e}")))?;
    Ok(part)
}

#[cfg(test)]
mod tests;
