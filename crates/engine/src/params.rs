//! Params: their canonical form (what the key hashes), `--set` overrides, and differences between
//! two params sets in words a user can act on (`lr 0.001 → 0.002`).

use std::collections::BTreeMap;

use serde_json::Value;

/// Params (or overrides) as recorded with a run; `null` if the text does not parse.
pub fn parse_recorded(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or(Value::Null)
}

/// Canonical JSON: object keys sorted, no whitespace, numbers in their shortest round-trip form.
/// Comments, whitespace and key order of the source do not matter; values (and their types) do.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            out.push('{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// One `--set STAGE.PARAM=VALUE`, parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    pub stage: String,
    /// Dotted path into the params tables: `optim.lr` → ["optim", "lr"].
    pub path: Vec<String>,
    pub value: Value,
}

impl Override {
    /// Parse `STAGE.PARAM=VALUE`. VALUE is read as a TOML value (`2e-3`, `true`, `[1, 2]`,
    /// `"text"`); anything that is not valid TOML is taken as a plain string.
    pub fn parse(text: &str) -> Result<Override, String> {
        let usage =
            || format!("`--set {text}`: expected STAGE.PARAM=VALUE, e.g. --set train.lr=2e-3");
        let (lhs, rhs) = text.split_once('=').ok_or_else(usage)?;
        let (stage, param) = lhs.trim().split_once('.').ok_or_else(usage)?;
        let path: Vec<String> = param.split('.').map(|s| s.trim().to_string()).collect();
        if stage.is_empty() || path.iter().any(String::is_empty) {
            return Err(usage());
        }
        Ok(Override {
            stage: stage.to_string(),
            path,
            value: parse_value(rhs.trim()),
        })
    }

    pub fn param_name(&self) -> String {
        self.path.join(".")
    }
}

fn parse_value(text: &str) -> Value {
    super::stagefile::params_from_toml(&format!("v = {text}"))
        .and_then(|mut table| table.get_mut("v").map(Value::take))
        .unwrap_or_else(|| Value::String(text.to_string()))
}

/// Apply an override to a stage's params. The param must exist already, so that a typo does not
/// silently add an unused param that changes the key; the error names the close matches.
pub fn apply_override(params: &mut Value, o: &Override) -> Result<(), String> {
    let mut node = params;
    for (depth, part) in o.path.iter().enumerate() {
        let Some(map) = node.as_object_mut() else {
            return Err(format!(
                "`--set {}.{}`: `{}` is not a table of params",
                o.stage,
                o.param_name(),
                o.path[..depth].join(".")
            ));
        };
        if !map.contains_key(part) {
            let mut names: Vec<&String> = map.keys().collect();
            names.sort();
            let hint = match crate::diagnostic::did_you_mean(part, names.iter().map(|s| s.as_str()))
            {
                Some(best) => format!(" (did you mean `{best}`?)"),
                None if names.is_empty() => String::from(" (it has no params here)"),
                None => format!(
                    " (it has: {})",
                    names
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            return Err(format!(
                "`--set {}.{}`: stage `{}` has no param `{}`{hint}; add it to the stage's params first",
                o.stage,
                o.param_name(),
                o.stage,
                o.path[..=depth].join(".")
            ));
        }
        node = map.get_mut(part).expect("checked above");
    }
    *node = o.value.clone();
    Ok(())
}

/// Flatten nested params to dotted names: {"optim": {"lr": 1}} → {"optim.lr": 1}.
pub fn flatten(value: &Value) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
        match value {
            Value::Object(map) if !map.is_empty() || prefix.is_empty() => {
                for (k, v) in map {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&name, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", value, &mut out);
    out
}

/// One param that differs between two params sets.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ParamChange {
    pub name: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

impl std::fmt::Display for ParamChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<Value>| {
            v.as_ref()
                .map_or_else(|| "(unset)".to_string(), Value::to_string)
        };
        write!(f, "{} {} → {}", self.name, show(&self.old), show(&self.new))
    }
}

pub fn diff(old: &Value, new: &Value) -> Vec<ParamChange> {
    let (old, new) = (flatten(old), flatten(new));
    let mut names: Vec<&String> = old.keys().chain(new.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|n| old.get(*n) != new.get(*n))
        .map(|n| ParamChange {
            name: n.clone(),
            old: old.get(n).cloned(),
            new: new.get(n).cloned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from_toml(text: &str) -> Value {
        crate::stagefile::params_from_toml(text).unwrap()
    }

    #[test]
    fn canonical_form_ignores_order_whitespace_and_comments() {
        let a = from_toml("lr = 1e-3\n# note\nbatch = 64\n[optim]\nbeta = [0.9, 0.95]\n");
        let b = from_toml("[optim]\nbeta=[0.9,0.95]\n");
        let b_full = {
            let mut v = b;
            v["lr"] = json!(0.001);
            v["batch"] = json!(64);
            v
        };
        assert_eq!(canonical_json(&a), canonical_json(&b_full));
        assert_eq!(
            canonical_json(&a),
            r#"{"batch":64,"lr":0.001,"optim":{"beta":[0.9,0.95]}}"#
        );
    }

    #[test]
    fn canonical_form_keeps_values_and_types() {
        assert_ne!(
            canonical_json(&json!({"lr": 0.001})),
            canonical_json(&json!({"lr": 0.002}))
        );
        assert_ne!(
            canonical_json(&json!({"n": 1})),
            canonical_json(&json!({"n": 1.0}))
        );
        assert_ne!(
            canonical_json(&json!({"n": "1"})),
            canonical_json(&json!({"n": 1}))
        );
    }

    #[test]
    fn override_parses_toml_values_and_falls_back_to_strings() {
        let o = Override::parse("train.optim.lr=2e-3").unwrap();
        assert_eq!(
            (o.stage.as_str(), o.param_name().as_str(), o.value.clone()),
            ("train", "optim.lr", json!(0.002))
        );
        assert_eq!(Override::parse("t.flag=true").unwrap().value, json!(true));
        assert_eq!(Override::parse("t.dev=cuda").unwrap().value, json!("cuda"));
        assert_eq!(
            Override::parse("t.sizes=[1, 2]").unwrap().value,
            json!([1, 2])
        );
        assert!(Override::parse("train=3").is_err());
        assert!(Override::parse("train.lr").is_err());
        assert!(Override::parse(".lr=3").is_err());
    }

    #[test]
    fn override_must_name_an_existing_param() {
        let mut params = json!({"lr": 0.001, "optim": {"beta": 0.9}});
        apply_override(&mut params, &Override::parse("t.optim.beta=0.8").unwrap()).unwrap();
        assert_eq!(params["optim"]["beta"], json!(0.8));
        let err = apply_override(&mut params, &Override::parse("t.lrr=1").unwrap()).unwrap_err();
        assert!(err.contains("did you mean `lr`"), "{err}");
        let err = apply_override(&mut params, &Override::parse("t.lr.x=1").unwrap()).unwrap_err();
        assert!(err.contains("not a table"), "{err}");
    }

    #[test]
    fn diff_names_each_changed_leaf() {
        let changes = diff(
            &json!({"lr": 0.001, "o": {"b": 1}, "gone": 1}),
            &json!({"lr": 0.002, "o": {"b": 1}, "new": "x"}),
        );
        let text: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "gone 1 → (unset)",
                "lr 0.001 → 0.002",
                r#"new (unset) → "x""#
            ]
        );
    }
}
