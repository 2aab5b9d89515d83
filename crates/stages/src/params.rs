//! Reading a built-in kind's params into its typed struct, with errors that name the stage and
//! the param, and the defaults a kind documents.

use anyhow::Context;
use serde::de::DeserializeOwned;

use super::StageContext;

/// Deserialize the stage's params; unknown or mistyped params are an error naming the stage.
pub fn read<T: DeserializeOwned>(ctx: &StageContext<'_>) -> anyhow::Result<T> {
    read_value(ctx, ctx.params.clone())
}

/// Deserialize `value` (part of the stage's params) with the same errors as `read`.
pub fn read_value<T: DeserializeOwned>(
    ctx: &StageContext<'_>,
    value: serde_json::Value,
) -> anyhow::Result<T> {
    serde_json::from_value(value).with_context(|| {
        format!(
            "params of stage `{}` ({}): fix the stage's params file or inline table",
            ctx.stage,
            ctx.params_file.display()
        )
    })
}

/// The one stage this stage needs, for kinds that read exactly one upstream artifact.
pub fn single_upstream<'c>(
    ctx: &'c StageContext<'_>,
    what: &str,
) -> anyhow::Result<&'c std::path::Path> {
    let mut upstream = ctx.upstream.values();
    match (upstream.next(), upstream.next()) {
        (Some(path), None) => Ok(path),
        _ => anyhow::bail!(
            "stage `{}` needs exactly one upstream stage ({what}); it has {}: fix `needs` in the Stagefile",
            ctx.stage,
            ctx.upstream.len()
        ),
    }
}
