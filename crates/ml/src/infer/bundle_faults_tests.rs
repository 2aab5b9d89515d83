//! Bundles that are not what they claim: truncated or mis-shaped weights, weights of another dtype,
//! a config that does not match its weights. Each is refused with an error naming the file; none
//! panics.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use super::tests::tiny_bundle;
use super::*;

/// Loads the bundle, which must fail naming `file`; returns the message.
fn refused(out: &Path, file: &str) -> String {
    let err = match Bundle::load(out, &Device::Cpu) {
        Ok(_) => panic!("a bundle with a damaged {file} loaded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(file), "the error names {file}: {err}");
    err
}

/// Rewrites a safetensors file, changing its tensors with `edit`.
fn rewrite(path: &Path, edit: impl Fn(&str, Tensor) -> Result<Tensor>) -> Result<()> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
    let edited = tensors
        .into_iter()
        .map(|(name, t)| Ok((name.clone(), edit(&name, t)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    candle_core::safetensors::save(&edited, path)
}

#[test]
fn truncated_weights_are_refused_naming_the_file() -> Result<()> {
    for file in ["model.safetensors", "lm/model.safetensors"] {
        let dir = tempfile::tempdir().map_err(candle_core::Error::wrap)?;
        let (out, ..) = tiny_bundle(dir.path())?;
        let path = out.join(file);
        let bytes = std::fs::read(&path)?;
        std::fs::write(&path, &bytes[..bytes.len() / 2])?;
        refused(&out, file);
    }
    Ok(())
}

#[test]
fn a_tensor_of_the_wrong_shape_is_refused_naming_it() -> Result<()> {
    let dir = tempfile::tempdir().map_err(candle_core::Error::wrap)?;
    let (out, ..) = tiny_bundle(dir.path())?;
    let names: Vec<String> =
        candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu)?
            .into_iter()
            .filter(|(_, t)| t.dims().len() == 2 && t.dim(0).ok() != t.dim(1).ok())
            .map(|(name, _)| name)
            .collect();
    let victim = names.first().expect("a non-square matrix").clone();
    rewrite(&out.join("model.safetensors"), |name, t| {
        if name == victim {
            t.t()?.contiguous()
        } else {
            Ok(t)
        }
    })?;
    let err = refused(&out, "model.safetensors");
    assert!(err.contains(&victim) && err.contains("has shape"), "{err}");
    Ok(())
}

#[test]
fn integer_weights_are_refused_not_converted() -> Result<()> {
    let dir = tempfile::tempdir().map_err(candle_core::Error::wrap)?;
    let (out, ..) = tiny_bundle(dir.path())?;
    rewrite(&out.join("model.safetensors"), |_, t| t.to_dtype(DType::U8))?;
    let err = refused(&out, "model.safetensors");
    assert!(err.contains("U8") || err.contains("u8"), "{err}");
    Ok(())
}

#[test]
fn a_config_that_does_not_match_the_weights_is_refused() -> Result<()> {
    let dir = tempfile::tempdir().map_err(candle_core::Error::wrap)?;
    let (out, ..) = tiny_bundle(dir.path())?;
    let info_path = out.join(INFO);
    let mut info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&info_path)?).map_err(candle_core::Error::wrap)?;
    let width = &mut info["model"]["vision"]["width"];
    assert!(
        width.is_u64(),
        "the tiny config has a vision width: {info:#}"
    );
    *width = serde_json::json!(width.as_u64().unwrap() * 2);
    std::fs::write(&info_path, info.to_string())?;
    let err = refused(&out, "model.safetensors");
    assert!(err.contains("has shape"), "{err}");
    Ok(())
}
