//! A stage's params: TOML (a params file or an inline table) turned into canonical JSON, the form
//! the stage key hashes and the stage code reads.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use rayon::prelude::*;
use serde_json::{Map, Number, Value};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::paths::{self, Location};
use super::syntax::syntax_error;
use super::{Loader, RawStage, STAGEFILE};
use crate::diagnostic::Diagnostic;

/// Where a table's text came from, to locate mistakes in it.
pub(super) struct Source<'a> {
    /// The path shown in diagnostics ("Stagefile", "stages/train.toml").
    pub shown: &'a Path,
    pub text: &'a str,
}

/// A params file to read once every stage is parsed, so the files can be read in parallel.
pub(super) struct FileRequest {
    /// Workspace-relative, as shown to the user.
    pub path: String,
    /// The span of an explicit `params = "..."`: a missing file is then a mistake. `None` for the
    /// default `stages/<name>.toml`, which may be absent.
    pub declared_at: Option<Range<usize>>,
}

impl Loader<'_> {
    /// Params from an inline table now, or a file to read later (`params = "path"`, or
    /// `stages/<name>.toml` when present); `{}` otherwise.
    pub(super) fn params(&mut self, raw: &mut RawStage, value: Option<&Spanned<DeValue<'_>>>) {
        let Some(value) = value else {
            let path = format!("stages/{}.toml", raw.name);
            raw.params_request = Some(FileRequest {
                path,
                declared_at: None,
            });
            return;
        };
        match value.get_ref() {
            DeValue::String(path) => match paths::normalize(path, &self.workspace_abs) {
                Ok(Location::Relative(p)) if !p.is_empty() => {
                    let declared_at = Some(value.span());
                    raw.params_request = Some(FileRequest {
                        path: p,
                        declared_at,
                    });
                }
                _ => {
                    raw.params_failed = true;
                    self.error(
                        value.span(),
                        format!("params file `{path}` must be a file inside the workspace"),
                        "write a workspace-relative path such as `stages/<stage>.toml`",
                    );
                }
            },
            DeValue::Table(table) => {
                let shown = Path::new(STAGEFILE);
                let source = Source {
                    shown,
                    text: self.text,
                };
                match table_to_json(table, &source, &mut self.diags) {
                    Some(json) => {
                        raw.params = json;
                        raw.params_inline = Some(value.span());
                    }
                    None => raw.params_failed = true,
                }
            }
            _ => {
                raw.params_failed = true;
                self.error(
                    value.span(),
                    "`params` must be a path to a TOML file or a table",
                    format!(
                        "write params = \"stages/{}.toml\" or params = {{ lr = 1e-3 }}",
                        raw.name
                    ),
                );
            }
        }
    }

    /// Read and convert every requested params file, in parallel: with hundreds of stages, file
    /// reads are most of the loading time. `prefetched` holds texts already read (see `prefetch`).
    pub(super) fn read_params_files(&mut self, raws: &mut [RawStage], prefetched: &Prefetched) {
        let workspace = self.workspace;
        let results: Vec<_> = raws
            .par_iter()
            .map(|raw| {
                let request = raw.params_request.as_ref()?;
                let text = match prefetched.get(&request.path) {
                    Some(text) => Ok(Some(text.clone())),
                    None => read_text(&workspace.join(&request.path)),
                };
                Some(text_to_json(text, Path::new(&request.path)))
            })
            .collect();
        for (raw, result) in raws.iter_mut().zip(results) {
            let (Some(request), Some(result)) = (raw.params_request.take(), result) else {
                continue;
            };
            match (result, request.declared_at) {
                (Ok(Some(json)), _) => {
                    raw.params = json;
                    raw.params_file = Some(request.path);
                }
                (Ok(None), Some(span)) => {
                    raw.params_failed = true;
                    let path = request.path;
                    let message = format!("params file `{path}` does not exist");
                    self.error(span, message, format!("create {path} or remove `params`"));
                }
                (Ok(None), None) => {}
                (Err(diags), _) => {
                    raw.params_failed = true;
                    self.diags.extend(diags);
                }
            }
        }
    }
}

/// Texts of `stages/*.toml`, by workspace-relative path.
pub(super) type Prefetched = HashMap<String, String>;

/// Read every `stages/*.toml`, meant to run while the Stagefile is parsed: most params files live
/// there, and the Stagefile does not need to be parsed to find them. Failures are left for
/// `read_params_files` to read again and report.
pub(super) fn prefetch(workspace: &Path) -> Prefetched {
    let Ok(entries) = std::fs::read_dir(workspace.join("stages")) else {
        return Prefetched::new();
    };
    let paths: Vec<String> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".toml"))
        .map(|name| format!("stages/{name}"))
        .collect();
    paths
        .into_par_iter()
        .filter_map(|path| {
            let text = std::fs::read_to_string(workspace.join(&path)).ok()?;
            Some((path, text))
        })
        .collect()
}

/// A file's text, `Ok(None)` when it does not exist (the caller decides whether that is a mistake).
fn read_text(full: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(full) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A TOML document's text as params JSON, or None when it is not valid TOML params.
pub(super) fn toml_text_to_json(text: &str) -> Option<Value> {
    text_to_json(Ok(Some(text.to_string())), Path::new("(text)"))
        .ok()
        .flatten()
}

/// Convert a params file's text (see `read_text`); failures are diagnostics located in the file.
fn text_to_json(
    text: std::io::Result<Option<String>>,
    shown: &Path,
) -> Result<Option<Value>, Vec<Diagnostic>> {
    let text = match text {
        Ok(Some(text)) => text,
        Ok(None) => return Ok(None),
        Err(e) => {
            let msg = format!("cannot read params file `{}`: {e}", shown.display());
            let help = "make it a readable TOML file";
            return Err(vec![Diagnostic::error(msg).in_file(shown).with_help(help)]);
        }
    };
    let source = Source { shown, text: &text };
    let table = DeTable::parse(&text).map_err(|e| vec![syntax_error(shown, &text, &e)])?;
    let mut diags = Vec::new();
    match table_to_json(table.get_ref(), &source, &mut diags) {
        Some(json) => Ok(Some(json)),
        None => Err(diags),
    }
}

/// Convert a TOML table; `None` (with diagnostics pushed) when a value has no JSON form.
pub(super) fn table_to_json(
    table: &DeTable<'_>,
    source: &Source<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Value> {
    let mut object = Map::new();
    let mut ok = true;
    for (key, value) in table.iter() {
        match value_to_json(value, source, diags) {
            Some(json) => {
                object.insert(key.get_ref().to_string(), json);
            }
            None => ok = false,
        }
    }
    ok.then_some(Value::Object(object))
}

fn value_to_json(
    value: &Spanned<DeValue<'_>>,
    source: &Source<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Value> {
    let error = |message: &str, help: &str| {
        Diagnostic::at(source.shown, source.text, value.span(), message).with_help(help)
    };
    match value.get_ref() {
        DeValue::String(s) => Some(Value::String(s.to_string())),
        DeValue::Boolean(b) => Some(Value::Bool(*b)),
        // TOML datetimes have no JSON form; their TOML text is canonical and readable.
        DeValue::Datetime(dt) => Some(Value::String(dt.to_string())),
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => Some(Value::Number(n.into())),
            Err(_) => {
                let help = "params integers must fit in 64 bits";
                diags.push(error("integer out of range", help));
                None
            }
        },
        DeValue::Float(x) => {
            let number = x.as_str().parse::<f64>().ok().and_then(Number::from_f64);
            if number.is_none() {
                let help = format!("replace `{}` with a finite number", x.as_str());
                diags.push(error("params must be finite numbers", &help));
            }
            number.map(Value::Number)
        }
        DeValue::Array(items) => {
            let converted: Vec<Option<Value>> = items
                .iter()
                .map(|item| value_to_json(item, source, diags))
                .collect();
            converted
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .map(Value::Array)
        }
        DeValue::Table(table) => table_to_json(table, source, diags),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn convert(text: &str) -> Result<Value, String> {
        let table = DeTable::parse(text).unwrap();
        let source = Source {
            shown: Path::new("stages/x.toml"),
            text,
        };
        let mut diags = Vec::new();
        table_to_json(table.get_ref(), &source, &mut diags).ok_or_else(|| {
            let rendered: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
            rendered.join("\n\n")
        })
    }

    #[test]
    fn converts_every_toml_type() {
        let text = "lr = 1e-3\nsteps = 0x10\nname = \"clip\"\nuse_amp = true\n\
                    when = 1979-05-27T07:32:00Z\nday = 1979-05-27\nsizes = [1, 2.5, \"x\"]\n\
                    [model]\nwidth = 1_024\n[model.vision]\npatch = 16\n";
        let expected = json!({
            "lr": 0.001, "steps": 16, "name": "clip", "use_amp": true,
            "when": "1979-05-27T07:32:00Z", "day": "1979-05-27", "sizes": [1, 2.5, "x"],
            "model": { "width": 1024, "vision": { "patch": 16 } }
        });
        assert_eq!(convert(text).unwrap(), expected);
    }

    #[test]
    fn integers_stay_integers() {
        let value = convert("a = 3\nb = 3.0\nc = -7").unwrap();
        assert!(value["a"].is_i64() && value["b"].is_f64());
        assert_eq!(value["c"], json!(-7));
    }

    #[test]
    fn non_finite_floats_are_located_in_the_params_file() {
        let err = convert("lr = 0.1\nwarmup = nan\nscale = [1.0, -inf]\n").unwrap_err();
        assert!(err.contains("error: params must be finite numbers\n --> stages/x.toml:2:10"));
        assert!(err.contains("= help: replace `nan` with a finite number"));
        assert!(err.contains("stages/x.toml:3:15"), "{err}");
    }
}
