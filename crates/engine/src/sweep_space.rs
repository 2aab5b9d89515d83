//! What a sweep tries, from its command line: `stage.param=v1,v2,…` lists, tried in every
//! combination (a grid), and `loguniform(a,b)`, `uniform(a,b)` or `randint(a,b)` draws, which make
//! it a random search of `--trials N` draws (lists are then drawn from too). Draws come from a
//! seeded generator, so the same command tries the same values.

use serde_json::Value;

use super::params::Override;

/// One param the sweep varies: `stage.param` and what it takes.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    pub stage: String,
    /// `stage.param`, as written.
    pub name: String,
    pub domain: Domain,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Domain {
    Values(Vec<Value>),
    LogUniform(f64, f64),
    Uniform(f64, f64),
    /// Both ends included.
    RandInt(i64, i64),
}

/// One assignment of every axis.
#[derive(Clone, Debug, PartialEq)]
pub struct Trial {
    /// (`stage.param`, value), in the axes' order.
    pub values: Vec<(String, Value)>,
}

impl Trial {
    /// The trial as `--set` overrides.
    pub fn set_args(&self) -> Vec<String> {
        self.values
            .iter()
            .map(|(name, value)| format!("{name}={}", value_text(value)))
            .collect()
    }
}

/// A value written so that `--set` reads it back as the same value (a float stays a float).
pub fn value_text(value: &Value) -> String {
    match value {
        Value::Number(n) if n.is_f64() => format!("{:?}", n.as_f64().expect("an f64")),
        other => other.to_string(),
    }
}

impl Axis {
    /// Parse `stage.param=…`.
    pub fn parse(text: &str) -> Result<Axis, String> {
        let usage = || {
            format!(
                "`{text}`: expected STAGE.PARAM=V1,V2,… or STAGE.PARAM=loguniform(LO,HI) \
                 (also uniform, randint), e.g. clip-train.lr=1e-3,5e-4"
            )
        };
        let (lhs, rhs) = text.split_once('=').ok_or_else(usage)?;
        let rhs = rhs.trim();
        let first = Override::parse(&format!("{lhs}=0")).map_err(|_| usage())?;
        let name = format!("{}.{}", first.stage, first.param_name());
        let domain = match draw(rhs) {
            Some((kind, args)) => parse_draw(text, kind, args)?,
            None => {
                let values: Vec<Value> = split_top_level(rhs)
                    .into_iter()
                    .map(|v| Override::parse(&format!("{name}={v}")).map(|o| o.value))
                    .collect::<Result<_, _>>()?;
                if values.iter().any(|v| v.as_str() == Some("")) {
                    return Err(format!("`{text}`: an empty value in the list"));
                }
                Domain::Values(values)
            }
        };
        Ok(Axis {
            stage: first.stage,
            name,
            domain,
        })
    }

    fn is_draw(&self) -> bool {
        !matches!(self.domain, Domain::Values(_))
    }

    fn sample(&self, rng: &mut SplitMix64) -> Value {
        match &self.domain {
            Domain::Values(values) => values[rng.below(values.len() as u64) as usize].clone(),
            Domain::LogUniform(lo, hi) => {
                let x = (lo.ln() + rng.unit() * (hi.ln() - lo.ln())).exp();
                Value::from(four_digits(x))
            }
            Domain::Uniform(lo, hi) => Value::from(four_digits(lo + rng.unit() * (hi - lo))),
            Domain::RandInt(lo, hi) => Value::from(lo + rng.below((hi - lo + 1) as u64) as i64),
        }
    }
}

/// `kind(args)` → (kind, args), for the three draws.
fn draw(text: &str) -> Option<(&str, &str)> {
    let (kind, rest) = text.split_once('(')?;
    let kind = kind.trim();
    let args = rest.trim_end().strip_suffix(')')?;
    ["loguniform", "uniform", "randint"]
        .contains(&kind)
        .then_some((kind, args))
}

fn parse_draw(text: &str, kind: &str, args: &str) -> Result<Domain, String> {
    let bad = |why: &str| format!("`{text}`: {why}");
    let parts: Vec<&str> = args.split(',').map(str::trim).collect();
    let [lo, hi] = parts.as_slice() else {
        return Err(bad(&format!("{kind} takes two bounds, e.g. {kind}(1, 10)")));
    };
    if kind == "randint" {
        let (lo, hi): (i64, i64) = match (lo.parse(), hi.parse()) {
            (Ok(lo), Ok(hi)) => (lo, hi),
            _ => return Err(bad("randint's bounds are integers")),
        };
        if lo > hi {
            return Err(bad("the low bound is above the high one"));
        }
        return Ok(Domain::RandInt(lo, hi));
    }
    let (lo, hi): (f64, f64) = match (lo.parse(), hi.parse()) {
        (Ok(lo), Ok(hi)) => (lo, hi),
        _ => return Err(bad(&format!("{kind}'s bounds are numbers"))),
    };
    if !(lo.is_finite() && hi.is_finite()) || lo >= hi {
        return Err(bad("the bounds must be finite, low below high"));
    }
    if kind == "loguniform" {
        if lo <= 0.0 {
            return Err(bad("loguniform's bounds are above 0"));
        }
        Ok(Domain::LogUniform(lo, hi))
    } else {
        Ok(Domain::Uniform(lo, hi))
    }
}

/// `a,"b,c",[1,2]` → [`a`, `"b,c"`, `[1,2]`]: commas inside quotes or brackets do not split.
fn split_top_level(text: &str) -> Vec<String> {
    let (mut parts, mut current) = (Vec::new(), String::new());
    let (mut depth, mut quote) = (0i32, None);
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            (None, ',') if depth == 0 => {
                parts.push(std::mem::take(&mut current).trim().to_string());
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current.trim().to_string());
    parts
}

/// Rounded to four significant digits, so a drawn value reads well and is typed back exactly.
fn four_digits(x: f64) -> f64 {
    format!("{x:.3e}").parse().unwrap_or(x)
}

/// The trials of `axes`: every combination of lists (the last axis changing fastest), or, when an
/// axis is a draw, `trials` draws seeded with `seed`.
pub fn trials(axes: &[Axis], trials: Option<usize>, seed: u64) -> Result<Vec<Trial>, String> {
    if axes.is_empty() {
        return Err("name at least one param to vary, e.g. clip-train.lr=1e-3,5e-4".into());
    }
    for (i, a) in axes.iter().enumerate() {
        if axes[..i].iter().any(|b| b.name == a.name) {
            return Err(format!(
                "`{}` is varied twice: give its values once",
                a.name
            ));
        }
    }
    if axes.iter().any(Axis::is_draw) {
        let n = trials.ok_or(
            "a random search needs its number of trials: add --trials N (e.g. --trials 8)",
        )?;
        if n == 0 {
            return Err("--trials 0: a sweep tries at least one setting".into());
        }
        let mut rng = SplitMix64(seed);
        return Ok((0..n)
            .map(|_| Trial {
                values: axes
                    .iter()
                    .map(|a| (a.name.clone(), a.sample(&mut rng)))
                    .collect(),
            })
            .collect());
    }
    if trials.is_some() {
        return Err(
            "--trials is for a random search (loguniform, uniform, randint); lists are tried in \
             every combination"
                .into(),
        );
    }
    let mut grid = vec![Trial { values: vec![] }];
    for axis in axes {
        let Domain::Values(values) = &axis.domain else {
            unreachable!("no draws here")
        };
        grid = grid
            .into_iter()
            .flat_map(|t| {
                values.iter().map(move |v| {
                    let mut values = t.values.clone();
                    values.push((axis.name.clone(), v.clone()));
                    Trial { values }
                })
            })
            .collect();
    }
    Ok(grid)
}

/// A small seeded generator (SplitMix64): the same seed draws the same trials everywhere.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn axes(texts: &[&str]) -> Vec<Axis> {
        texts.iter().map(|t| Axis::parse(t).unwrap()).collect()
    }

    #[test]
    fn lists_make_every_combination() {
        let t = trials(&axes(&["train.lr=1e-3,5e-4", "train.seed=0,1,2"]), None, 0).unwrap();
        assert_eq!(t.len(), 6);
        assert_eq!(
            t[1].values,
            vec![
                ("train.lr".into(), json!(1e-3)),
                ("train.seed".into(), json!(1))
            ]
        );
        assert_eq!(t[5].set_args(), ["train.lr=0.0005", "train.seed=2"]);
    }

    #[test]
    fn a_float_stays_a_float_and_commas_inside_values_do_not_split() {
        let a = Axis::parse(r#"s.p=1.0,"a,b",[1,2]"#).unwrap();
        assert_eq!(
            a.domain,
            Domain::Values(vec![json!(1.0), json!("a,b"), json!([1, 2])])
        );
        let t = trials(&[a], None, 0).unwrap();
        assert_eq!(t[0].set_args(), ["s.p=1.0"]);
        assert_eq!(t[1].set_args(), [r#"s.p="a,b""#]);
    }

    #[test]
    fn draws_are_seeded_in_range_and_need_a_count() {
        let a = axes(&["t.lr=loguniform(1e-4, 1e-2)", "t.n=randint(1,3)", "t.x=a,b"]);
        let one = trials(&a, Some(50), 7).unwrap();
        assert_eq!(one, trials(&a, Some(50), 7).unwrap());
        assert_ne!(one, trials(&a, Some(50), 8).unwrap());
        let lrs: Vec<f64> = one
            .iter()
            .map(|t| t.values[0].1.as_f64().unwrap())
            .collect();
        assert!(lrs.iter().all(|&lr| (1e-4..=1e-2).contains(&lr)), "{lrs:?}");
        assert!(lrs.iter().any(|&lr| lr < 1e-3) && lrs.iter().any(|&lr| lr > 1e-3));
        let ns: Vec<i64> = one
            .iter()
            .map(|t| t.values[1].1.as_i64().unwrap())
            .collect();
        assert!((1..=3).all(|n| ns.contains(&n)) && ns.iter().all(|n| (1..=3).contains(n)));
        assert!(trials(&a, None, 0).unwrap_err().contains("--trials N"));
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let err = |t: &str| Axis::parse(t).unwrap_err();
        assert!(err("lr=1,2").contains("STAGE.PARAM="));
        assert!(err("t.lr=loguniform(0, 1)").contains("above 0"));
        assert!(err("t.lr=uniform(2, 1)").contains("low below high"));
        assert!(err("t.n=randint(1.5, 3)").contains("integers"));
        assert!(err("t.lr=uniform(1)").contains("two bounds"));
        assert!(err("t.lr=1,,2").contains("empty value"));
        let twice = axes(&["t.lr=1,2", "t.lr=3"]);
        assert!(trials(&twice, None, 0).unwrap_err().contains("twice"));
        assert!(
            trials(&axes(&["t.lr=1,2"]), Some(3), 0)
                .unwrap_err()
                .contains("random search")
        );
    }
}
