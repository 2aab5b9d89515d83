//! Every stage's params checked by its kind (`Kind::check_params`) once the Stagefile is read, so
//! that a misspelt or mistyped param stops the build before anything runs, not when its stage
//! starts hours in. Each problem is located at its key or value in the params file or inline
//! table; after `--set` overrides, the params are checked again and a problem names the `--set`.

use std::ops::Range;
use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::params::Prefetched;
use super::{Loader, Pipeline, RawStage, STAGEFILE};
use crate::diagnostic::{Diagnostic, Diagnostics, did_you_mean, list_choices};
use crate::kind::{Kind, Kinds, ParamFault, ParamKey, ParamProblem};
use crate::params::Override;

impl Loader<'_> {
    /// Pass 1, last step: each stage's params, as read, checked by its kind.
    pub(super) fn check_params(&mut self, raws: &[RawStage], prefetched: &Prefetched) {
        for raw in raws {
            let Some(kind) = raw.kind.filter(|_| !raw.params_failed) else {
                continue;
            };
            let problems = kind.check_params(&raw.params);
            if !problems.is_empty() {
                let diags = self.locate(raw, kind, &problems, prefetched);
                self.diags.extend(diags);
            }
        }
    }

    /// The problems as diagnostics in the params file, the inline table, or (for a stage without
    /// params) at the stage's name.
    fn locate(
        &self,
        raw: &RawStage,
        kind: &dyn Kind,
        problems: &[ParamProblem],
        prefetched: &Prefetched,
    ) -> Vec<Diagnostic> {
        let file = raw.params_file.as_ref().map(|path| {
            let text = prefetched.get(path).cloned().or_else(|| {
                let full = self.workspace.join(path);
                std::fs::read_to_string(full).ok()
            });
            (Path::new(path.as_str()), text.unwrap_or_default())
        });
        let (shown, text) = match &file {
            Some((shown, text)) => (*shown, text.as_str()),
            None => (Path::new(STAGEFILE), self.text),
        };
        // Parsed again only now that there is something to point at; the text parsed before.
        let doc = DeTable::parse(text).ok();
        let table = doc
            .as_ref()
            .and_then(|doc| match (&file, &raw.params_inline) {
                (Some(_), _) => Some(doc.get_ref()),
                (None, Some(_)) => inline_params(doc.get_ref(), &raw.name),
                (None, None) => None,
            });
        let whole = match (&file, &raw.params_inline) {
            (Some(_), _) => None,
            (None, Some(span)) => Some(span.clone()),
            (None, None) => Some(raw.name_span.clone()),
        };
        let origin = match (&file, &raw.params_inline) {
            (Some((shown, _)), _) => shown.display().to_string(),
            (None, Some(_)) => "its params table".to_string(),
            (None, None) => format!("stages/{}.toml", raw.name),
        };
        problems
            .iter()
            .map(|problem| {
                let (message, help) = describe(&raw.name, kind.name(), problem, &origin);
                let span = table
                    .and_then(|t| find(t, problem))
                    .or_else(|| whole.clone());
                let diagnostic = match span {
                    Some(span) => Diagnostic::at(shown, text, span, message),
                    None => Diagnostic::error(message).in_file(shown),
                };
                diagnostic.with_help(help)
            })
            .collect()
    }
}

/// The params of each stage a `--set` changed, checked again by its kind. A problem names the
/// `--set` argument (as typed) that touched its param, or the stage's first one.
pub fn check_overrides(
    pipeline: &Pipeline,
    kinds: &Kinds,
    sets: &[(&str, Override)],
) -> Result<(), Diagnostics> {
    let mut diags = Vec::new();
    let mut checked: Vec<&str> = Vec::new();
    for (_, o) in sets {
        if checked.contains(&o.stage.as_str()) {
            continue;
        }
        checked.push(&o.stage);
        let Some(stage) = pipeline.stages.iter().find(|s| s.name == o.stage) else {
            continue;
        };
        let Some(kind) = kinds.find(&stage.kind) else {
            continue;
        };
        let ours: Vec<&(&str, Override)> =
            sets.iter().filter(|(_, s)| s.stage == o.stage).collect();
        for problem in kind.check_params(&stage.params) {
            let touched = ours.iter().find(|(_, s)| related(&s.path, &problem.path));
            let (text, _) = touched.copied().unwrap_or(ours[0]);
            let origin = format!("the `--set` value, or {}", stage_origin(stage));
            let (message, help) = describe(&stage.name, kind.name(), &problem, &origin);
            diags.push(Diagnostic::error(format!("`--set {text}`: {message}")).with_help(help));
        }
    }
    if diags.is_empty() {
        Ok(())
    } else {
        Err(Diagnostics(diags))
    }
}

fn stage_origin(stage: &super::Stage) -> String {
    match &stage.params_file {
        Some(path) => path.clone(),
        None => "its params table".to_string(),
    }
}

/// Whether an override's dotted path and a problem's path lead to the same param (one inside the
/// other).
fn related(set: &[String], problem: &[ParamKey]) -> bool {
    set.iter()
        .zip(problem)
        .all(|(s, p)| matches!(p, ParamKey::Key(k) if k == s))
}

/// What a problem says and what to do about it. `origin` is where the params come from, for the
/// help of a missing param.
fn describe(stage: &str, kind: &str, problem: &ParamProblem, origin: &str) -> (String, String) {
    let dotted = problem.dotted();
    match &problem.fault {
        ParamFault::Unknown { known } => {
            let message = format!("unknown param `{dotted}` in stage `{stage}`");
            let last = match problem.path.last() {
                Some(ParamKey::Key(k)) => k.as_str(),
                _ => "",
            };
            let help = match did_you_mean(last, known.iter().map(String::as_str)) {
                Some(s) => format!("did you mean `{s}`?"),
                None if known.is_empty() => "remove it: nothing is read there".to_string(),
                None if problem.path.len() <= 1 => format!(
                    "the params of a `{kind}` stage are {}",
                    list_choices(known.iter().map(String::as_str))
                ),
                None => format!(
                    "the keys there are {}",
                    list_choices(known.iter().map(String::as_str))
                ),
            };
            (message, help)
        }
        ParamFault::Missing { key } => {
            let full = if dotted.is_empty() {
                key.clone()
            } else {
                format!("{dotted}.{key}")
            };
            let message = format!("stage `{stage}` lacks the param `{full}`");
            (message, format!("add `{full}` to {origin}"))
        }
        ParamFault::Invalid(why) => {
            let message = if dotted.is_empty() {
                format!("params of stage `{stage}`: {why}")
            } else {
                format!("param `{dotted}` of stage `{stage}`: {why}")
            };
            let help = match why.rsplit_once("expected ") {
                Some((_, expected)) if !dotted.is_empty() => {
                    format!("`{dotted}` takes {expected}")
                }
                _ => format!("see what a `{kind}` stage takes in the README"),
            };
            (message, help)
        }
    }
}

/// The inline `params` table of stage `name` in the parsed Stagefile.
fn inline_params<'d>(doc: &'d DeTable<'d>, name: &str) -> Option<&'d DeTable<'d>> {
    let stages = entry(doc, "stages")?.1.get_ref().as_table()?;
    let stage = entry(stages, name)?.1.get_ref().as_table()?;
    entry(stage, "params")?.1.get_ref().as_table()
}

type Entry<'t, 'd> = (
    &'t Spanned<toml::de::DeString<'d>>,
    &'t Spanned<DeValue<'d>>,
);

fn entry<'t, 'd>(table: &'t DeTable<'d>, key: &str) -> Option<Entry<'t, 'd>> {
    table.iter().find(|(k, _)| k.get_ref().as_ref() == key)
}

/// Where to point for a problem: an unknown key itself, the key of a table that lacks one, or a
/// refused value. None when its path is not in the TOML (the params as a whole).
fn find(table: &DeTable<'_>, problem: &ParamProblem) -> Option<Range<usize>> {
    let (first, rest) = problem.path.split_first()?;
    let ParamKey::Key(first) = first else {
        return None;
    };
    let (key, mut value) = entry(table, first)?;
    let mut key_span = key.span();
    for step in rest {
        let next = match (step, value.get_ref()) {
            (ParamKey::Key(k), DeValue::Table(t)) => entry(t, k).map(|(k, v)| (k.span(), v)),
            (ParamKey::Index(i), DeValue::Array(items)) => items.get(*i).map(|v| (v.span(), v)),
            _ => None,
        };
        let Some((span, next)) = next else {
            break;
        };
        (key_span, value) = (span, next);
    }
    match problem.fault {
        ParamFault::Invalid(_) => Some(value.span()),
        ParamFault::Unknown { .. } | ParamFault::Missing { .. } => Some(key_span),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::super::tests::{Fake, assert_diag, workspace};
    use super::super::{Pipeline, load};
    use super::*;
    use crate::params::apply_override;

    /// A kind that declares its params: `steps` (required, an integer), `lr`, and a `lora` table
    /// holding `rank`.
    struct Train;

    impl Kind for Train {
        fn name(&self) -> &'static str {
            "train"
        }

        fn version(&self) -> &'static str {
            "1"
        }

        fn check_params(&self, params: &Value) -> Vec<ParamProblem> {
            let mut problems = Vec::new();
            let key = |k: &str| ParamKey::Key(k.to_string());
            let unknown = |path: Vec<ParamKey>, known: &[&str]| ParamProblem {
                path,
                fault: ParamFault::Unknown {
                    known: known.iter().map(|k| k.to_string()).collect(),
                },
            };
            let top = params.as_object().unwrap();
            for k in top
                .keys()
                .filter(|k| !["steps", "lr", "lora"].contains(&k.as_str()))
            {
                problems.push(unknown(vec![key(k)], &["steps", "lr", "lora"]));
            }
            match top.get("steps") {
                None => problems.push(ParamProblem {
                    path: vec![],
                    fault: ParamFault::Missing {
                        key: "steps".into(),
                    },
                }),
                Some(v) if !v.is_u64() => problems.push(ParamProblem::invalid(
                    &["steps"],
                    format!("invalid type: {v}, expected u64"),
                )),
                Some(_) => {}
            }
            let lora = top.get("lora").and_then(Value::as_object);
            for k in lora
                .into_iter()
                .flat_map(|t| t.keys())
                .filter(|k| *k != "rank")
            {
                problems.push(unknown(vec![key("lora"), key(k)], &["rank"]));
            }
            problems
        }

        fn run(&self, _ctx: &crate::kind::StageContext<'_>) -> anyhow::Result<()> {
            unreachable!("the loader never runs a stage")
        }
    }

    fn kinds() -> Kinds {
        Kinds::new(&[&Train, &Fake("eval")])
    }

    fn load_in(stagefile: &str, files: &[(&str, &str)]) -> Result<Pipeline, String> {
        let ws = workspace(stagefile, files);
        load(ws.path(), &kinds()).map_err(|d| d.to_string())
    }

    #[test]
    fn every_stage_params_are_checked_and_located() {
        let stagefile = r#"[stages.a]
kind = "train"
[stages.b]
kind = "train"
params = { steps = 3, lrr = 0.1 }
[stages.c]
kind = "train"
[stages.c.params]
steps = 2
[stages.c.params.lora]
rnak = 4
[stages.d]
kind = "train"
[stages.e]
kind = "eval"
params = { anything = "goes" }
"#;
        let files = [("stages/a.toml", "lr = 1e-3\nsteps = \"many\"\n")];
        let err = load_in(stagefile, &files).unwrap_err();
        let wrong = "param `steps` of stage `a`: invalid type: \"many\", expected u64";
        assert_diag(&err, wrong, "stages/a.toml:2:9", "`steps` takes u64");
        let misspelt = "unknown param `lrr` in stage `b`";
        assert_diag(&err, misspelt, "Stagefile:5:23", "did you mean `lr`?");
        let nested = "unknown param `lora.rnak` in stage `c`";
        assert_diag(&err, nested, "Stagefile:11:1", "did you mean `rank`?");
        let missing = "stage `d` lacks the param `steps`";
        assert_diag(
            &err,
            missing,
            "Stagefile:12:9",
            "add `steps` to stages/d.toml",
        );
        assert_eq!(err.matches("error:").count(), 4, "{err}");
    }

    #[test]
    fn params_that_could_not_be_read_are_not_checked_again() {
        let stagefile = "[stages.a]\nkind = \"train\"\nparams = { lr = nan }\n";
        let err = load_in(stagefile, &[]).unwrap_err();
        assert!(err.contains("params must be finite numbers"), "{err}");
        assert_eq!(err.matches("error:").count(), 1, "{err}");
    }

    #[test]
    fn set_overrides_are_checked_and_named() {
        let stagefile = "[stages.a]\nkind = \"train\"\nparams = { steps = 3, lr = 0.1 }\n";
        let mut pipeline = load_in(stagefile, &[]).unwrap();
        let sets: Vec<(&str, Override)> = ["a.lr=0.2", "a.steps=many"]
            .into_iter()
            .map(|text| (text, Override::parse(text).unwrap()))
            .collect();
        for (_, o) in &sets {
            apply_override(&mut pipeline.stages[0].params, o).unwrap();
        }
        let err = check_overrides(&pipeline, &kinds(), &sets)
            .unwrap_err()
            .to_string();
        let expected = "error: `--set a.steps=many`: param `steps` of stage `a`: invalid type: \
                        \"many\", expected u64\n  = help: `steps` takes u64";
        assert_eq!(err, expected);
        let ok = load_in(stagefile, &[]).unwrap();
        assert!(check_overrides(&ok, &kinds(), &sets[..1]).is_ok());
    }
}
