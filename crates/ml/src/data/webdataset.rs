//! WebDataset shards (as LAION-400M is distributed): tar files whose members `KEY.EXT` belong to
//! the sample `KEY`. As in webdataset, the key is the member's path up to the first dot of its
//! file name (`a/000123.jpg` and `a/000123.txt` are sample `a/000123`, extension `jpg` and `txt`;
//! extensions are compared in lower case) and a sample is the run of consecutive members sharing
//! a key. A sample needs an image (`jpg`, `jpeg`, `png` or `webp`) and a caption (`txt`, or a
//! `json` object's `caption` or else `txt` string field; `txt` wins when both are there).
//!
//! Shards (`.tar`, or gzipped `.tar.gz`/`.tgz`) are streamed: one sample's members are in memory
//! at a time. A shard cut short keeps the
//! samples read in full and reports where it broke; a file that is not a tar at all is an error.

use std::io::Read;
use std::path::Path;

use super::{DataError, format_err, io_err, open_maybe_gzipped};

/// The member extensions read as a sample's image, in lower case.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp"];

/// A sample with an image and a caption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// `KEY`: the member path up to the first dot of the file name, e.g. `000123` or `a/000123`.
    pub key: String,
    /// The image member's extension, in lower case.
    pub image_ext: String,
    /// The image member's bytes, not decoded.
    pub image: Vec<u8>,
    pub caption: String,
}

/// Why a sample was left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Skip {
    /// No `jpg`/`jpeg`/`png`/`webp` member.
    NoImage,
    /// No `txt` member, nor a `json` one with a `caption` or `txt` string; or an empty caption.
    NoCaption,
    /// A key that climbs out of its folder (`../x`) or is absolute: not a name to write to disk.
    BadName,
    /// The shard ended inside this sample.
    Truncated,
}

impl Skip {
    pub const ALL: [Skip; 4] = [
        Skip::NoImage,
        Skip::NoCaption,
        Skip::BadName,
        Skip::Truncated,
    ];

    /// The metric that counts this reason.
    pub fn metric(self) -> &'static str {
        match self {
            Skip::NoImage => "skipped_no_image",
            Skip::NoCaption => "skipped_no_caption",
            Skip::BadName => "skipped_bad_name",
            Skip::Truncated => "skipped_truncated",
        }
    }
}

/// What [`read_shard`] hands its visitor, in shard order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Sample(Sample),
    Skipped {
        key: String,
        reason: Skip,
        /// Plain words for the log.
        detail: String,
    },
}

/// How a shard ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardEnd {
    /// Where and why the shard broke off, when it was cut short.
    pub truncated: Option<String>,
}

/// Stream the samples of the shard at `path` to `visit`, which may stop the reading by returning
/// an error. Errors name the shard.
pub fn read_shard<E: From<DataError>>(
    path: &Path,
    mut visit: impl FnMut(Item) -> Result<(), E>,
) -> Result<ShardEnd, E> {
    let mut archive = tar::Archive::new(open_maybe_gzipped(path)?);
    let entries = archive.entries().map_err(io_err(path))?;
    let mut pending: Option<Pending> = None;
    let mut truncated = None;
    for (members, entry) in entries.enumerate() {
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(e) if members == 0 => {
                return Err(
                    format_err(path, None, format!("not a readable tar archive: {e}")).into(),
                );
            }
            Err(e) => {
                truncated = Some(format!("after member {members}: {e}"));
                break;
            }
        };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(io_err(path))?
            .to_string_lossy()
            .into_owned();
        let Some((key, ext)) = key_and_extension(&name) else {
            continue;
        };
        if pending.as_ref().is_none_or(|p| p.key != key) {
            if let Some(done) = pending.take() {
                visit(done.finish())?;
            }
            pending = Some(Pending::new(key));
        }
        let sample = pending.as_mut().expect("set above");
        if !sample.wants(&ext) {
            continue; // left unread: the archive skips it
        }
        let size = entry.size();
        let mut data = Vec::with_capacity(size.min(1 << 24) as usize);
        match entry.read_to_end(&mut data) {
            Ok(_) if data.len() as u64 == size => sample.add(ext, data),
            Ok(_) => {
                truncated = Some(format!(
                    "member {name} holds {} of its {size} bytes",
                    data.len()
                ));
                break;
            }
            Err(e) => {
                truncated = Some(format!("member {name}: {e}"));
                break;
            }
        }
    }
    if let Some(sample) = pending {
        let item = match (&truncated, sample.finish()) {
            (Some(why), Item::Skipped { key, .. }) => Item::Skipped {
                key,
                reason: Skip::Truncated,
                detail: format!("the shard ends inside it ({why})"),
            },
            (_, item) => item,
        };
        visit(item)?;
    }
    Ok(ShardEnd { truncated })
}

/// `KEY` and lower-case `EXT` of a member path `KEY.EXT`, or None for names webdataset ignores
/// (no dot, or a file name starting with one).
pub fn key_and_extension(name: &str) -> Option<(String, String)> {
    let mut name = name;
    while let Some(rest) = name.strip_prefix("./") {
        name = rest;
    }
    let (dir, file) = match name.rfind('/') {
        Some(slash) => name.split_at(slash + 1),
        None => ("", name),
    };
    let dot = file.find('.')?;
    if dot == 0 {
        return None;
    }
    Some((
        format!("{dir}{}", &file[..dot]),
        file[dot + 1..].to_ascii_lowercase(),
    ))
}

/// True when `key` is a relative path of plain names, safe to write under a folder.
fn safe_key(key: &str) -> bool {
    !key.starts_with('/')
        && key
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != ".." && !part.contains('\\'))
}

/// The members of one key read so far.
struct Pending {
    key: String,
    image: Option<(String, Vec<u8>)>,
    txt: Option<Vec<u8>>,
    json: Option<Vec<u8>>,
}

impl Pending {
    fn new(key: String) -> Pending {
        Pending {
            key,
            image: None,
            txt: None,
            json: None,
        }
    }

    /// Whether a member with this extension is worth reading (the first image, the captions).
    fn wants(&self, ext: &str) -> bool {
        match ext {
            "txt" => self.txt.is_none(),
            "json" => self.json.is_none(),
            _ => self.image.is_none() && IMAGE_EXTENSIONS.contains(&ext),
        }
    }

    fn add(&mut self, ext: String, data: Vec<u8>) {
        match ext.as_str() {
            "txt" => self.txt = Some(data),
            "json" => self.json = Some(data),
            _ => self.image = Some((ext, data)),
        }
    }

    fn finish(self) -> Item {
        let skipped = |key, reason, detail: &str| Item::Skipped {
            key,
            reason,
            detail: detail.to_string(),
        };
        if !safe_key(&self.key) {
            return skipped(
                self.key,
                Skip::BadName,
                "the key is not a plain relative path",
            );
        }
        let caption = self.caption();
        let Some((image_ext, image)) = self.image else {
            return skipped(self.key, Skip::NoImage, "no jpg, jpeg, png or webp member");
        };
        match caption {
            Ok(caption) => Item::Sample(Sample {
                key: self.key,
                image_ext,
                image,
                caption,
            }),
            Err(why) => skipped(self.key, Skip::NoCaption, &why),
        }
    }

    fn caption(&self) -> Result<String, String> {
        let from_txt = self
            .txt
            .as_ref()
            .map(|bytes| match std::str::from_utf8(bytes) {
                Ok(text) => non_empty(text, "the txt member is empty"),
                Err(_) => Err("the txt member is not UTF-8".to_string()),
            });
        let from_json = self.json.as_ref().map(|bytes| {
            let value: serde_json::Value = serde_json::from_slice(bytes)
                .map_err(|e| format!("the json member is not JSON: {e}"))?;
            let text = ["caption", "txt"]
                .iter()
                .find_map(|field| value.get(field).and_then(|v| v.as_str()))
                .ok_or("the json member has no `caption` or `txt` string")?;
            non_empty(text, "the json member's caption is empty")
        });
        match (from_txt, from_json) {
            (Some(Ok(caption)), _) | (_, Some(Ok(caption))) => Ok(caption),
            (Some(Err(why)), _) | (None, Some(Err(why))) => Err(why),
            (None, None) => Err("no txt or json member".to_string()),
        }
    }
}

fn non_empty(text: &str, otherwise: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        Err(otherwise.to_string())
    } else {
        Ok(text.to_string())
    }
}

#[cfg(test)]
#[path = "webdataset_tests.rs"]
mod tests;
