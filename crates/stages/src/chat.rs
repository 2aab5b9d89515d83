//! A chat with a trained VLM about one image, from a chat-export bundle: finding the bundle (a
//! folder, or a workspace's chat-export stage), loading it and the image, and the model's side of
//! each turn. `vlmflow chat` only parses its arguments, reads the user's lines and prints.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use candle_core::Tensor;
use vlmflow_engine::build::{EngineError, load_pipeline};
use vlmflow_engine::workspace::Workspace;
use vlmflow_ml::infer::bundle::{self, Bundle};

pub use vlmflow_ml::data::chat::Turn;
pub use vlmflow_ml::infer::generate::SamplingConfig;

/// Why a chat could not start or go on; the kind decides the exit code.
#[derive(Debug)]
pub enum ChatError {
    /// `--image` names no file.
    NoImage(PathBuf),
    /// `--bundle` names a folder without a bundle in it.
    NotABundle(String),
    /// The image is not one this bundle can read.
    BadImage(String),
    /// `--prompt` holds no question.
    EmptyPrompt,
    /// `--device` names no device, or one this build or machine does not have.
    Device(String),
    /// The bundle is there but does not load (damaged, or of another version).
    BundleDoesNotLoad(String),
    /// Generating the reply failed.
    Reply(String),
}

impl ChatError {
    /// Whether the command line was wrong (rather than work that failed).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ChatError::NoImage(_)
                | ChatError::NotABundle(_)
                | ChatError::BadImage(_)
                | ChatError::EmptyPrompt
                | ChatError::Device(_)
        )
    }
}

impl fmt::Display for ChatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChatError::NoImage(path) => write!(
                f,
                "{}: no such image file: pass the path of a PNG or JPEG to --image",
                path.display()
            ),
            ChatError::NotABundle(e) | ChatError::Reply(e) => f.write_str(e),
            ChatError::BadImage(e) => write!(f, "cannot use the image: {e}"),
            ChatError::EmptyPrompt => f.write_str(
                "--prompt is empty: ask a question, e.g. --prompt \"What shape is it?\"",
            ),
            ChatError::BundleDoesNotLoad(e) => write!(f, "the chat bundle does not load: {e}"),
            ChatError::Device(e) => write!(f, "--device: {e}"),
        }
    }
}

/// A wrong command line exits 2, failed work 1.
impl From<ChatError> for EngineError {
    fn from(e: ChatError) -> EngineError {
        if e.is_usage() {
            EngineError::Usage(e.to_string())
        } else {
            EngineError::Failed(e.to_string())
        }
    }
}

/// A loaded bundle and the image the conversation is about.
pub struct Chat {
    bundle: Arc<Bundle>,
    image: Tensor,
    sampling: SamplingConfig,
}

impl Chat {
    /// Load the bundle in `dir` onto `device` (`cpu`, `cuda`, `cuda:N`) and the image at `image`,
    /// to answer with `sampling`.
    pub fn open(
        dir: &Path,
        image: &Path,
        device: &str,
        sampling: SamplingConfig,
    ) -> Result<Chat, ChatError> {
        if !image.is_file() {
            return Err(ChatError::NoImage(image.to_path_buf()));
        }
        let bundle = load_bundle(dir, device)?;
        let image = bundle
            .load_image(image)
            .map_err(|e| ChatError::BadImage(e.to_string()))?;
        Ok(Chat {
            bundle,
            image,
            sampling,
        })
    }

    /// A chat with a loaded `bundle` about an image given as its encoded bytes (a PNG or JPEG
    /// sent to `vlmflow ui`).
    pub fn with_image_bytes(
        bundle: Arc<Bundle>,
        image: &[u8],
        sampling: SamplingConfig,
    ) -> Result<Chat, ChatError> {
        let image = bundle
            .decode_image(image)
            .map_err(|e| ChatError::BadImage(e.to_string()))?;
        Ok(Chat {
            bundle,
            image,
            sampling,
        })
    }

    /// The reply to `question` after `history`, with `on_text` called with each new piece of text
    /// as it is generated.
    pub fn reply(
        &self,
        history: &[Turn],
        question: &str,
        on_text: impl FnMut(&str),
    ) -> Result<String, ChatError> {
        self.bundle
            .reply(&self.image, history, question, &self.sampling, on_text)
            .map_err(|e| ChatError::Reply(e.to_string()))
    }
}

/// Whether `dir` holds a chat bundle.
pub fn is_bundle(dir: &Path) -> bool {
    dir.join(bundle::INFO).is_file()
}

fn load_bundle(dir: &Path, device: &str) -> Result<Arc<Bundle>, ChatError> {
    let device = crate::open_device(device).map_err(|e| ChatError::Device(e.to_string()))?;
    let bundle = Bundle::load(dir, &device).map_err(|e| {
        if is_bundle(dir) {
            ChatError::BundleDoesNotLoad(e.to_string())
        } else {
            ChatError::NotABundle(e.to_string())
        }
    })?;
    Ok(Arc::new(bundle))
}

/// Bundles kept loaded between questions (a server's chats), each reloaded once its folder
/// changes (a rebuild of its stage).
pub struct LoadedBundles {
    device: String,
    loaded: Mutex<HashMap<PathBuf, (FolderStamp, Arc<Bundle>)>>,
}

/// A folder's files, each with what tells it apart from the one it replaced: size and mtime.
type FolderStamp = Vec<(PathBuf, u64, Option<SystemTime>)>;

impl LoadedBundles {
    /// Bundles to be loaded onto `device` (`cpu`, `cuda`, `cuda:N`).
    pub fn new(device: &str) -> LoadedBundles {
        LoadedBundles {
            device: device.to_string(),
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// The bundle in `dir`, loaded now if it is not loaded or has changed since.
    pub fn get(&self, dir: &Path) -> Result<Arc<Bundle>, ChatError> {
        let stamp = folder_stamp(dir);
        // Held while loading: two first questions load the bundle once.
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, bundle)) = loaded.get(dir)
            && *seen == stamp
        {
            return Ok(bundle.clone());
        }
        let bundle = load_bundle(dir, &self.device)?;
        loaded.insert(dir.to_path_buf(), (stamp, bundle.clone()));
        Ok(bundle)
    }
}

/// Every file at the top of `dir` (where a bundle's info, weights and tokenizer are) with its size
/// and modification time.
fn folder_stamp(dir: &Path) -> FolderStamp {
    let mut stamp: FolderStamp = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let meta = entry.metadata().ok()?;
            meta.is_file()
                .then(|| (entry.path(), meta.len(), meta.modified().ok()))
        })
        .collect();
    stamp.sort();
    stamp
}

/// A one-shot question, trimmed; an empty one is refused.
pub fn prompt(text: &str) -> Result<&str, ChatError> {
    match text.trim() {
        "" => Err(ChatError::EmptyPrompt),
        question => Ok(question),
    }
}

/// Where the workspace found from `start` keeps the bundle of its stage `stage`.
pub fn stage_bundle(start: &Path, stage: &str) -> Result<PathBuf, EngineError> {
    let Some(ws) = Workspace::find(start) else {
        return Err(EngineError::Usage(format!(
            "no Stagefile in {} or any parent folder: pass --bundle DIR, or run inside a workspace",
            start.display()
        )));
    };
    let (pipeline, _) = load_pipeline(&ws, &crate::kinds(), &[])?;
    let Some(found) = pipeline.stages.iter().find(|s| s.name == stage) else {
        return Err(EngineError::Usage(format!(
            "the Stagefile has no stage `{stage}`: name the chat-export stage with --stage, or pass --bundle DIR"
        )));
    };
    let dir = ws.root.join(&found.outs[0]);
    if !dir.join(bundle::INFO).is_file() {
        return Err(EngineError::Usage(format!(
            "stage `{stage}` has no bundle at {}: run `vlmflow build {stage}` first",
            dir.display()
        )));
    }
    Ok(dir)
}
