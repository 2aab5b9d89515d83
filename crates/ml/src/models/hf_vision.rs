//! A pretrained vision tower from a Hugging Face CLIP or SigLIP folder: `config.json` (a whole
//! model's or the tower's own, `hf_vision_config`), the weights (`hf_weights`: one file or
//! shards, any float dtype) and, when present, `preprocessor_config.json` for the pixel
//! normalisation the checkpoint expects.
//!
//! The tower's tensors are renamed to this project's ViT names under `vision.`, as a CLIP or a
//! VLM holds them; the text tower, `visual_projection` and SigLIP's pooling `head` are not read.
//! A whole model's checkpoint (and a tower saved by transformers 4) names them `vision_model.*`,
//! a tower saved by transformers 5 `embeddings.*`, `encoder.*`: both are read.
//!
//! A checkpoint trained at another image size than the data's gets its position-embedding grid
//! resized once here (bicubic, `pos_resize`), as transformers' `interpolate_pos_encoding` does
//! on every call: CLIP ViT-B/16's 14×14 grid of 224-px images becomes 2×2 on 32-px shards.

use std::path::Path;

use candle_core::{Device, Result, Tensor};

use super::hf_vision_config::{Family, HfVisionConfig};
use super::hf_weights::{CONFIG, fail, read_tensors, read_text, tensor_names};
use super::pos_resize::resize_grid;
use super::vit::VisionTransformer;
use crate::param_store::ParamStore;

pub const PREPROCESSOR: &str = "preprocessor_config.json";

/// What the weight errors call the folder.
const MODEL: &str = "CLIP or SigLIP";

/// A tower read from a folder.
pub struct HfVision {
    /// The tower at the image size asked for, feature layer at its default.
    pub model: VisionTransformer,
    /// Every parameter, named `vision.*`.
    pub params: ParamStore,
    pub family: Family,
    /// The checkpoint's own image size, when its position grid was resized for another.
    pub resized_from: Option<usize>,
}

/// How a checkpoint tensor becomes ours.
#[derive(Clone, Copy)]
enum Convert {
    AsIs,
    /// A conv weight `(width, 3, p, p)` → the linear `(width, 3·p·p)` over unfolded patches.
    ConvToLinear,
    /// The position table, its patch grid resized to the image size asked for.
    Positions,
}

/// One tensor: its checkpoint name and shape, our name under `vision.`, how it converts.
struct Mapped {
    hf: String,
    shape: Vec<usize>,
    ours: String,
    convert: Convert,
}

/// Reads the tower in `dir` for images of `image_size` px (the data's; a multiple of the
/// checkpoint's patch size).
pub fn load_hf_vision(dir: &Path, image_size: usize, device: &Device) -> Result<HfVision> {
    if !dir.is_dir() {
        return Err(fail(
            dir,
            "not a folder: expected a Hugging Face CLIP or SigLIP model folder \
             (config.json and model.safetensors)",
        ));
    }
    let config_path = dir.join(CONFIG);
    if !config_path.is_file() {
        return Err(fail(
            &config_path,
            "missing: a Hugging Face CLIP or SigLIP model folder has its config here",
        ));
    }
    let hf = HfVisionConfig::from_json(&read_text(&config_path, "the model config")?)
        .map_err(|e| fail(&config_path, e))?;
    let processor_path = dir.join(PREPROCESSOR);
    let processor = if processor_path.is_file() {
        Some(read_text(&processor_path, "the image processor config")?)
    } else {
        None
    };
    let norm = hf
        .pixel_norm(processor.as_deref())
        .map_err(|e| fail(&processor_path, e))?;
    if image_size == 0 || !image_size.is_multiple_of(hf.patch_size) {
        return Err(fail(
            dir,
            format!(
                "images of {image_size} px do not split into this {} tower's {}-px patches: \
                 preprocess the images to a multiple of {} px (the checkpoint was trained at {} px)",
                hf.family.name(),
                hf.patch_size,
                hf.patch_size,
                hf.image_size
            ),
        ));
    }
    let cfg = hf.at(image_size, norm);
    let tensors = tensor_map(&hf, weight_prefix(dir, hf.family)?);
    let wanted: Vec<(String, Vec<usize>)> = tensors
        .iter()
        .map(|t| (t.hf.clone(), t.shape.clone()))
        .collect();
    let params = ParamStore::new(0, device);
    let vision = params.pp("vision");
    for (t, value) in tensors
        .iter()
        .zip(read_tensors(dir, &wanted, device, MODEL)?)
    {
        let value = match t.convert {
            Convert::AsIs => value,
            Convert::ConvToLinear => value.flatten_from(1)?,
            Convert::Positions => resize_positions(&value, &hf, cfg.grid())?,
        };
        vision.insert(&t.ours, &value)?;
    }
    let model = VisionTransformer::new(&vision, &cfg)?;
    debug_assert_eq!(
        params.vars().len(),
        tensors.len(),
        "every parameter came from the files"
    );
    Ok(HfVision {
        model,
        params,
        family: hf.family,
        resized_from: (hf.grid() != cfg.grid()).then_some(hf.image_size),
    })
}

/// The tower's parameters (`vision.*` in `params`) under the checkpoint's names with `prefix`,
/// shaped as a checkpoint holds them: what `load_hf_vision` reads, written back. `hf` is the
/// tower at its present image size (`HfVisionConfig::of`), so the position table is as it is.
pub fn checkpoint_tensors(
    params: &ParamStore,
    hf: &HfVisionConfig,
    prefix: &'static str,
) -> Result<Vec<(String, Tensor)>> {
    let ours: std::collections::HashMap<String, Tensor> = params
        .vars()
        .into_iter()
        .map(|(name, var)| (name, var.as_tensor().clone()))
        .collect();
    tensor_map(hf, prefix)
        .into_iter()
        .map(|t| {
            let name = format!("vision.{}", t.ours);
            let Some(value) = ours.get(&name) else {
                candle_core::bail!("the vision tower has no parameter {name}");
            };
            let value = match t.convert {
                Convert::ConvToLinear => value.reshape(t.shape.as_slice())?,
                Convert::AsIs | Convert::Positions => value.clone(),
            };
            if value.dims() != t.shape.as_slice() {
                candle_core::bail!(
                    "{name} is {:?}, its checkpoint tensor {} is {:?}",
                    value.dims(),
                    t.hf,
                    t.shape
                );
            }
            Ok((t.hf, value))
        })
        .collect()
}

/// `vision_model.` or nothing, by which name the patch embedding goes by.
fn weight_prefix(dir: &Path, family: Family) -> Result<&'static str> {
    let names = tensor_names(dir, MODEL)?;
    ["vision_model.", ""]
        .into_iter()
        .find(|prefix| names.contains(&format!("{prefix}embeddings.patch_embedding.weight")))
        .ok_or_else(|| {
            fail(
                dir,
                format!(
                    "the weights hold no {} vision tower: no tensor named \
                     vision_model.embeddings.patch_embedding.weight (or embeddings.patch_embedding.weight)",
                    family.name()
                ),
            )
        })
}

/// The tensor list as it is built: checkpoint names get `prefix`.
struct TensorMap {
    prefix: &'static str,
    out: Vec<Mapped>,
}

impl TensorMap {
    fn add(&mut self, hf: &str, shape: Vec<usize>, ours: &str, convert: Convert) {
        self.out.push(Mapped {
            hf: format!("{}{hf}", self.prefix),
            shape,
            ours: ours.to_string(),
            convert,
        });
    }

    fn vector(&mut self, hf: &str, ours: &str, len: usize) {
        self.add(hf, vec![len], ours, Convert::AsIs);
    }

    fn norm(&mut self, hf: &str, ours: &str, width: usize) {
        self.vector(&format!("{hf}.weight"), &format!("{ours}.weight"), width);
        self.vector(&format!("{hf}.bias"), &format!("{ours}.bias"), width);
    }

    fn linear(&mut self, hf: &str, ours: &str, d_in: usize, d_out: usize) {
        let (hf_weight, weight) = (format!("{hf}.weight"), format!("{ours}.weight"));
        self.add(&hf_weight, vec![d_out, d_in], &weight, Convert::AsIs);
        self.vector(&format!("{hf}.bias"), &format!("{ours}.bias"), d_out);
    }
}

/// Every tensor the tower reads, checkpoint name → ours.
fn tensor_map(hf: &HfVisionConfig, prefix: &'static str) -> Vec<Mapped> {
    let (w, p) = (hf.width, hf.patch_size);
    let clip = hf.family == Family::Clip;
    let mut map = TensorMap {
        prefix,
        out: Vec::new(),
    };
    let patch = "embeddings.patch_embedding.weight";
    map.add(
        patch,
        vec![w, 3, p, p],
        "patch_proj.weight",
        Convert::ConvToLinear,
    );
    let positions = vec![hf.grid() * hf.grid() + usize::from(clip), w];
    let table = "embeddings.position_embedding.weight";
    map.add(table, positions, "position_embedding", Convert::Positions);
    if clip {
        map.vector("embeddings.class_embedding", "class_embedding", w);
        map.norm("pre_layrnorm", "ln_pre", w);
    } else {
        map.vector("embeddings.patch_embedding.bias", "patch_proj.bias", w);
    }
    for i in 0..hf.layers {
        let (h, o) = (
            format!("encoder.layers.{i}"),
            format!("transformer.blocks.{i}"),
        );
        map.norm(&format!("{h}.layer_norm1"), &format!("{o}.ln_1"), w);
        map.norm(&format!("{h}.layer_norm2"), &format!("{o}.ln_2"), w);
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            map.linear(
                &format!("{h}.self_attn.{proj}"),
                &format!("{o}.attn.{proj}"),
                w,
                w,
            );
        }
        map.linear(
            &format!("{h}.mlp.fc1"),
            &format!("{o}.mlp.fc1"),
            w,
            hf.mlp_width,
        );
        map.linear(
            &format!("{h}.mlp.fc2"),
            &format!("{o}.mlp.fc2"),
            hf.mlp_width,
            w,
        );
    }
    map.norm("post_layernorm", "ln_post", w);
    map.out
}

/// The `(positions, width)` table with its patch grid resized to `grid`² (a CLS row first
/// stays as it is).
fn resize_positions(table: &Tensor, hf: &HfVisionConfig, grid: usize) -> Result<Tensor> {
    let old = hf.grid();
    if old == grid {
        return Ok(table.clone());
    }
    let cls = usize::from(hf.family == Family::Clip);
    let values: Vec<f32> = table.flatten_all()?.to_vec1()?;
    let (head, patches) = values.split_at(cls * hf.width);
    let mut out = head.to_vec();
    out.extend(resize_grid(patches, old, grid, hf.width));
    Tensor::from_vec(out, (cls + grid * grid, hf.width), table.device())
}

#[cfg(test)]
#[path = "hf_vision_tests.rs"]
mod tests;
