//! What a kind reads besides its params: the upstream artifacts it recognises, and workspace paths
//! it must have declared as inputs.

use std::path::Path;

use anyhow::bail;

use crate::StageContext;

/// A `preprocess` artifact: shards, their caption records and the tokenizer.
pub(crate) fn is_data(path: &Path) -> bool {
    path.join("meta.json").is_file() && path.join("tokenizer.json").is_file()
}

/// Local data must be a declared input, or edits to it would not make the stage stale.
pub(crate) fn require_input(ctx: &StageContext<'_>, path: &str) -> anyhow::Result<()> {
    let covered = ctx
        .inputs
        .iter()
        .any(|i| path == i || path.starts_with(&format!("{i}/")));
    if !covered {
        bail!(
            "stage `{}` reads {path}, which is not among its `inputs`: add it to `inputs` in the Stagefile \
             so that changing it reruns the stage",
            ctx.stage
        );
    }
    Ok(())
}
