//! Brace expansion of shard patterns, as webdataset's `braceexpand` does it:
//! `shard-{00000..00002}.tar` → `shard-00000.tar shard-00001.tar shard-00002.tar`.
//!
//! - `{a,b,c}`: each alternative in turn (alternatives may hold braces themselves);
//! - `{M..N}` and `{M..N..STEP}`: integers from M to N inclusive, counting down when N < M; when
//!   either bound is written with a leading zero (`00000`), every number is zero-padded to the
//!   longer bound's width;
//! - several groups multiply out left to right: `{a,b}-{1..2}` → `a-1 a-2 b-1 b-2`;
//! - a group that is neither (`{x}`, `{}`) stays as written, as in bash and braceexpand;
//! - an unmatched `{` or `}` is an error, since it is almost always a typo in a path.

/// More names than this is a typo (`{0..99999999}`), not a dataset.
pub const MAX_EXPANSION: usize = 1_000_000;

/// Every name `pattern` stands for, in order. Errors say what is wrong with the pattern.
pub fn expand(pattern: &str) -> Result<Vec<String>, String> {
    check_balanced(pattern)?;
    let mut out = Vec::new();
    expand_into(pattern, &mut out)?;
    Ok(out)
}

fn check_balanced(pattern: &str) -> Result<(), String> {
    let mut depth = 0usize;
    for (i, c) in pattern.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                return Err(format!("`{pattern}`: `}}` at byte {i} closes no `{{`"));
            }
            '}' => depth -= 1,
            _ => {}
        }
    }
    if depth > 0 {
        return Err(format!("`{pattern}`: a `{{` is never closed"));
    }
    Ok(())
}

fn expand_into(pattern: &str, out: &mut Vec<String>) -> Result<(), String> {
    let Some(open) = pattern.find('{') else {
        push(out, pattern.to_string())?;
        return Ok(());
    };
    let close = open + matching_close(&pattern[open..]);
    let (prefix, inner, suffix) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let alternatives: Vec<String> = match (top_level_parts(inner), range(inner)?) {
        (parts, _) if parts.len() > 1 => {
            let mut alts = Vec::new();
            for part in parts {
                expand_into(part, &mut alts)?;
            }
            alts
        }
        (_, Some(numbers)) => numbers,
        // Not a group: keep the braces, expand what is inside and after them.
        _ => {
            let mut alts = Vec::new();
            expand_into(inner, &mut alts)?;
            alts.into_iter().map(|a| format!("{{{a}}}")).collect()
        }
    };
    let mut tails = Vec::new();
    expand_into(suffix, &mut tails)?;
    for alt in &alternatives {
        for tail in &tails {
            push(out, format!("{prefix}{alt}{tail}"))?;
        }
    }
    Ok(())
}

fn push(out: &mut Vec<String>, name: String) -> Result<(), String> {
    if out.len() >= MAX_EXPANSION {
        return Err(format!(
            "expands to more than {MAX_EXPANSION} names: check the ranges"
        ));
    }
    out.push(name);
    Ok(())
}

/// The byte offset of the `}` matching the `{` at offset 0 (the pattern is balanced).
fn matching_close(s: &str) -> usize {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    unreachable!("check_balanced ran first")
}

/// `inner` split at the commas outside nested braces.
fn top_level_parts(inner: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
}

/// `M..N` or `M..N..STEP` as its numbers, or None when `inner` is not a range.
fn range(inner: &str) -> Result<Option<Vec<String>>, String> {
    let fields: Vec<&str> = inner.split("..").collect();
    let (first, last, step) = match fields.as_slice() {
        [a, b] => (*a, *b, "1"),
        [a, b, s] => (*a, *b, *s),
        _ => return Ok(None),
    };
    let (Ok(from), Ok(to), Ok(step)) = (
        first.parse::<i64>(),
        last.parse::<i64>(),
        step.parse::<i64>(),
    ) else {
        return Ok(None);
    };
    let step = step.unsigned_abs().max(1);
    let padded = |s: &str| {
        let digits = s.trim_start_matches('-');
        digits.len() > 1 && digits.starts_with('0')
    };
    let width = if padded(first) || padded(last) {
        first.len().max(last.len())
    } else {
        0
    };
    let count = from.abs_diff(to) / step + 1;
    if count > MAX_EXPANSION as u64 {
        return Err(format!(
            "`{{{inner}}}` expands to {count} names, more than {MAX_EXPANSION}: check the range"
        ));
    }
    let numbers = (0..count)
        .map(|i| {
            let n = if to >= from {
                from + (i * step) as i64
            } else {
                from - (i * step) as i64
            };
            if n < 0 {
                format!("-{:0w$}", n.unsigned_abs(), w = width.saturating_sub(1))
            } else {
                format!("{n:0width$}")
            }
        })
        .collect();
    Ok(Some(numbers))
}

#[cfg(test)]
mod tests {
    use super::expand;

    fn names(pattern: &str) -> Vec<String> {
        expand(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"))
    }

    #[test]
    fn zero_padded_ranges_as_laion_shards_are_named() {
        assert_eq!(
            names("data/shard-{00000..00002}.tar"),
            [
                "data/shard-00000.tar",
                "data/shard-00001.tar",
                "data/shard-00002.tar"
            ]
        );
        assert_eq!(names("s{8..11}"), ["s8", "s9", "s10", "s11"]);
        assert_eq!(names("s{08..11}"), ["s08", "s09", "s10", "s11"]);
        assert_eq!(names("s{3..1}"), ["s3", "s2", "s1"]);
        assert_eq!(names("s{0..10..5}"), ["s0", "s5", "s10"]);
        assert_eq!(names("{-1..1}"), ["-1", "0", "1"]);
        assert_eq!(names("{0..0}"), ["0"]);
    }

    #[test]
    fn lists_nest_and_groups_multiply_left_to_right() {
        assert_eq!(names("{a,b}-{1..2}"), ["a-1", "a-2", "b-1", "b-2"]);
        assert_eq!(names("x{a,b{1..2},}y"), ["xay", "xb1y", "xb2y", "xy"]);
        assert_eq!(names("plain.tar"), ["plain.tar"]);
    }

    #[test]
    fn a_group_that_is_not_a_list_or_range_stays_as_written() {
        assert_eq!(names("a{x}b"), ["a{x}b"]);
        assert_eq!(names("a{}b"), ["a{}b"]);
        assert_eq!(names("{1..x}"), ["{1..x}"]);
        assert_eq!(names("{{a,b}}"), ["{a}", "{b}"]);
    }

    #[test]
    fn unbalanced_braces_and_huge_ranges_are_errors() {
        assert!(
            expand("shard-{0..3.tar")
                .unwrap_err()
                .contains("never closed")
        );
        assert!(expand("shard-0..3}.tar").unwrap_err().contains("closes no"));
        assert!(expand("{0..99999999}").unwrap_err().contains("more than"));
        assert!(
            expand("{0..999}{0..9999}")
                .unwrap_err()
                .contains("more than")
        );
    }
}
