//! The weights of a Hugging Face model folder: one `model.safetensors`, or shards
//! `model-0000N-of-0000M.safetensors` listed by `model.safetensors.index.json` (its `weight_map`).
//!
//! Shared by the Qwen2 and the CLIP/SigLIP loaders. Every tensor asked for is checked by name and
//! shape, and an error names the file, the tensor and what was expected. Weights on disk may be
//! bf16, f16 or f32; they come back as f32.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::safetensors::{BufferedSafetensors, Load};
use candle_core::{DType, Device, Error, Result, Tensor};

pub const CONFIG: &str = "config.json";
pub const WEIGHTS: &str = "model.safetensors";
pub const INDEX: &str = "model.safetensors.index.json";

pub(crate) fn fail(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Msg(format!("{}: {message}", path.display()))
}

pub(crate) fn read_text(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| fail(path, format!("cannot read {what}: {e}")))
}

/// Where a folder's tensors are: the single file, or the shard index's map.
enum Layout {
    Single(PathBuf),
    Sharded {
        index: PathBuf,
        weight_map: HashMap<String, String>,
    },
}

/// `model` names the kind of folder in errors ("Qwen2", "CLIP or SigLIP").
fn layout(dir: &Path, model: &str) -> Result<Layout> {
    let (single, index) = (dir.join(WEIGHTS), dir.join(INDEX));
    if single.is_file() {
        return Ok(Layout::Single(single));
    }
    if !index.is_file() {
        return Err(fail(
            dir,
            format!("no {WEIGHTS} and no {INDEX}: a Hugging Face {model} folder has one of them"),
        ));
    }
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: HashMap<String, String>,
    }
    let parsed: Index = serde_json::from_str(&read_text(&index, "the shard index")?)
        .map_err(|e| fail(&index, format!("not a safetensors index ({e})")))?;
    Ok(Layout::Sharded {
        index,
        weight_map: parsed.weight_map,
    })
}

/// The names of every tensor in the folder (from the index, or the single file's header), for
/// loaders that must see how a checkpoint names things before asking for them.
pub fn tensor_names(dir: &Path, model: &str) -> Result<BTreeSet<String>> {
    match layout(dir, model)? {
        Layout::Sharded { weight_map, .. } => Ok(weight_map.into_keys().collect()),
        Layout::Single(path) => header_names(&path),
    }
}

/// The folder's weight files by name: `model.safetensors`, or the index and every shard it lists.
pub fn weight_files(dir: &Path, model: &str) -> Result<Vec<String>> {
    Ok(match layout(dir, model)? {
        Layout::Single(_) => vec![WEIGHTS.to_string()],
        Layout::Sharded { weight_map, .. } => {
            let shards: BTreeSet<String> = weight_map.into_values().collect();
            std::iter::once(INDEX.to_string()).chain(shards).collect()
        }
    })
}

/// The tensor names in a safetensors header (an 8-byte length, then JSON), without reading
/// the data that follows.
fn header_names(path: &Path) -> Result<BTreeSet<String>> {
    let bad = |why: String| fail(path, format!("not a safetensors file ({why})"));
    let mut file =
        std::fs::File::open(path).map_err(|e| fail(path, format!("cannot read weights: {e}")))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|e| bad(e.to_string()))?;
    let len = u64::from_le_bytes(len);
    if len > 100_000_000 {
        return Err(bad(format!("a header of {len} bytes")));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header)
        .map_err(|e| bad(e.to_string()))?;
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
    Ok(map
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k != "__metadata__")
        .collect())
}

/// Reads each `(name, shape)` of `wanted` as f32, in order. `model` names the kind of folder in
/// errors; a missing tensor or a wrong shape is blamed on the file against `config.json`.
pub fn read_tensors(
    dir: &Path,
    wanted: &[(String, Vec<usize>)],
    device: &Device,
    model: &str,
) -> Result<Vec<Tensor>> {
    // Which file holds each wanted tensor.
    let mut files: BTreeMap<PathBuf, Vec<usize>> = BTreeMap::new();
    match layout(dir, model)? {
        Layout::Single(path) => {
            files.insert(path, (0..wanted.len()).collect());
        }
        Layout::Sharded { index, weight_map } => {
            for (i, (name, _)) in wanted.iter().enumerate() {
                let file = weight_map.get(name).ok_or_else(|| {
                    fail(
                        &index,
                        format!("weight_map has no entry for {name}, which {CONFIG} implies"),
                    )
                })?;
                files.entry(dir.join(file)).or_default().push(i);
            }
        }
    }
    let mut out: Vec<Option<Tensor>> = vec![None; wanted.len()];
    for (path, indices) in files {
        let bytes =
            std::fs::read(&path).map_err(|e| fail(&path, format!("cannot read weights: {e}")))?;
        let file = BufferedSafetensors::new(bytes)
            .map_err(|e| fail(&path, format!("not a safetensors file ({e})")))?;
        for i in indices {
            let (name, shape) = &wanted[i];
            let view = file.get(name).map_err(|_| {
                fail(
                    &path,
                    format!("no tensor named {name}; the weights do not match {CONFIG}"),
                )
            })?;
            if view.shape() != shape.as_slice() {
                return Err(fail(
                    &path,
                    format!(
                        "{name} has shape {:?}, {CONFIG} implies {shape:?}",
                        view.shape()
                    ),
                ));
            }
            let t = view
                .load(device)
                .and_then(|t| t.to_dtype(DType::F32))
                .map_err(|e| fail(&path, format!("{name}: {e}")))?;
            out[i] = Some(t);
        }
    }
    Ok(out.into_iter().flatten().collect())
}
