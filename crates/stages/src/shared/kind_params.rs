//! A built-in kind's params: read into its typed struct when the stage runs (`read`), and checked
//! against the same struct when the Stagefile loads (`check`, for `Kind::check_params`), so that
//! the two never disagree: a check finds problems exactly when the read would fail.

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_path_to_error::Segment;

use crate::StageContext;
use vlmflow_engine::kind::{ParamFault, ParamKey, ParamProblem};

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

/// The problems reading `params` into `T`, a plain struct, meets (serde stops at the first).
pub fn check<T: DeserializeOwned>(params: &Value) -> Vec<ParamProblem> {
    located::<T>(params).err().into_iter().collect()
}

/// A plain struct that a kind's params struct flattens into one table (serde's `flatten`).
pub struct Part {
    fields: &'static [&'static str],
    read: fn(&Value) -> Result<(), ParamProblem>,
}

pub fn part<T: DeserializeOwned>() -> Part {
    Part {
        fields: field_names::<T>(),
        read: |params| located::<T>(params).map(drop),
    }
}

/// The problems reading `params` into `T`, a struct made of `parts` flattened together. Serde
/// reports a mistake inside a flattened struct without its key, so each part is read alone to
/// find it, and an unknown key is compared with the names of all the parts.
pub fn check_flattened<T: DeserializeOwned>(params: &Value, parts: &[Part]) -> Vec<ParamProblem> {
    let Err(whole) = located::<T>(params) else {
        return Vec::new();
    };
    if !whole.path.is_empty() {
        return vec![whole];
    }
    let known: Vec<String> = parts
        .iter()
        .flat_map(|p| p.fields.iter().map(|f| f.to_string()))
        .collect();
    let keys = params.as_object().into_iter().flat_map(|o| o.keys());
    let mut problems: Vec<ParamProblem> = keys
        .filter(|k| !known.contains(k))
        .map(|k| ParamProblem {
            path: vec![ParamKey::Key(k.clone())],
            fault: ParamFault::Unknown {
                known: known.clone(),
            },
        })
        .collect();
    problems.extend(parts.iter().filter_map(|p| (p.read)(params).err()));
    if problems.is_empty() {
        problems.push(whole);
    }
    problems
}

/// `T` read from `params`, or the problem serde met, with the path to it.
fn located<T: DeserializeOwned>(params: &Value) -> Result<T, ParamProblem> {
    serde_path_to_error::deserialize(params).map_err(|e| {
        let path: Vec<ParamKey> = e
            .path()
            .iter()
            .filter_map(|segment| match segment {
                Segment::Map { key } => Some(ParamKey::Key(key.clone())),
                Segment::Enum { variant } => Some(ParamKey::Key(variant.clone())),
                Segment::Seq { index } => Some(ParamKey::Index(*index)),
                Segment::Unknown => None,
            })
            .collect();
        // Serde's words are the one description of these faults it gives: `unknown field `x`,
        // expected `a` or `b``, `missing field `steps``.
        let message = e.into_inner().to_string();
        let quoted: Vec<String> = message
            .split('`')
            .skip(1)
            .step_by(2)
            .map(String::from)
            .collect();
        let fault = match quoted.split_first() {
            // Inside a flattened struct the path stops short of the key (see `check_flattened`).
            Some((_, known)) if message.starts_with("unknown field `") => ParamFault::Unknown {
                known: known.to_vec(),
            },
            Some((key, _)) if message.starts_with("missing field `") => {
                ParamFault::Missing { key: key.clone() }
            }
            _ => ParamFault::Invalid(message),
        };
        ParamProblem { path, fault }
    })
}

/// The names serde reads for `T`, a plain struct: what it hands `deserialize_struct`.
fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    match T::deserialize(FieldNames) {
        Err(Fields(names)) => names,
        Ok(_) => &[],
    }
}

/// A deserializer that only records the field names it is asked for.
struct FieldNames;

#[derive(Debug)]
struct Fields(&'static [&'static str]);

impl std::fmt::Display for Fields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fields {:?}", self.0)
    }
}

impl std::error::Error for Fields {}

impl serde::de::Error for Fields {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        Fields(&[])
    }
}

impl<'de> serde::Deserializer<'de> for FieldNames {
    type Error = Fields;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Fields> {
        Err(Fields(&[]))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Fields> {
        Err(Fields(fields))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Hyper {
        steps: u64,
        #[serde(default)]
        seed: u64,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Own {
        #[serde(default)]
        count: u64,
        lora: Option<Lora>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Lora {
        rank: u64,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Params {
        #[serde(flatten)]
        own: Own,
        #[serde(flatten)]
        hyper: Hyper,
    }

    fn problems(params: Value) -> Vec<ParamProblem> {
        check_flattened::<Params>(&params, &[part::<Own>(), part::<Hyper>()])
    }

    fn key(k: &str) -> ParamKey {
        ParamKey::Key(k.to_string())
    }

    #[test]
    fn field_names_are_what_serde_reads() {
        assert_eq!(field_names::<Hyper>(), ["steps", "seed"]);
        assert_eq!(
            field_names::<Params>(),
            [] as [&str; 0],
            "a flattening struct has none"
        );
    }

    #[test]
    fn flattened_mistakes_are_found_with_their_keys() {
        assert!(problems(json!({"steps": 3, "count": 2})).is_empty());
        let wrong = problems(json!({"steps": "many"}));
        let expected = "invalid type: string \"many\", expected u64";
        assert_eq!(wrong, [ParamProblem::invalid(&["steps"], expected)]);
        let unknown = problems(json!({"steps": 3, "cuont": 1}));
        assert_eq!(unknown[0].path, [key("cuont")]);
        let known = ["count", "lora", "steps", "seed"]
            .map(String::from)
            .to_vec();
        assert_eq!(unknown[0].fault, ParamFault::Unknown { known });
        let nested = problems(json!({"steps": 3, "lora": {"rnak": 1}}));
        assert_eq!(nested[0].path, [key("lora"), key("rnak")]);
        let known = vec!["rank".to_string()];
        assert_eq!(nested[0].fault, ParamFault::Unknown { known });
        let missing = problems(json!({}));
        let steps = ParamFault::Missing {
            key: "steps".into(),
        };
        assert_eq!((missing[0].path.len(), &missing[0].fault), (0, &steps));
    }

    #[test]
    fn a_plain_struct_is_checked_by_serde_alone() {
        let p = check::<Lora>(&json!({"rank": 2, "alpha": 1}));
        let known = vec!["rank".to_string()];
        assert_eq!(p[0].path, [key("alpha")]);
        assert_eq!(p[0].fault, ParamFault::Unknown { known });
    }
}
