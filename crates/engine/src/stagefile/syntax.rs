//! TOML parse errors as diagnostics, in the user's words where the parser's are too terse.

use std::ops::Range;
use std::path::Path;

use super::STAGEFILE;
use crate::diagnostic::Diagnostic;

/// A TOML parse error as a diagnostic in `shown` (the Stagefile or a params file).
pub(super) fn syntax_error(shown: &Path, text: &str, error: &toml::de::Error) -> Diagnostic {
    let Some(span) = error.span() else {
        let message = format!("invalid TOML: {}", error.message());
        return Diagnostic::error(message)
            .in_file(shown)
            .with_help("fix the TOML syntax");
    };
    let in_stagefile = shown == Path::new(STAGEFILE);
    let (message, help) = if error.message().starts_with("duplicate key") {
        duplicate_key(text, span.clone(), in_stagefile)
    } else {
        let help = "fix the TOML syntax (see https://toml.io)".to_string();
        (error.message().to_string(), help)
    };
    Diagnostic::at(shown, text, span, message).with_help(help)
}

/// The parser's "duplicate key", in the user's words: a stage defined twice is the common case.
fn duplicate_key(text: &str, span: Range<usize>, in_stagefile: bool) -> (String, String) {
    let before = text.get(..span.start).unwrap_or("");
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    if let Some(stage) = header_stage(line).filter(|_| in_stagefile) {
        let first = text.lines().position(|l| header_stage(l) == Some(stage));
        let help = match first {
            Some(i) => format!(
                "rename or merge one of them (the first is at line {})",
                i + 1
            ),
            None => "rename or merge one of them".to_string(),
        };
        return (format!("stage `{stage}` is defined twice"), help);
    }
    let key = text.get(span).unwrap_or("key").trim_matches('"');
    let help = "remove or rename one of them".to_string();
    (format!("`{key}` is defined twice"), help)
}

/// The stage name of a `[stages.<name>]` header line.
fn header_stage(line: &str) -> Option<&str> {
    let inner = line.trim().strip_prefix('[')?.split(']').next()?;
    if inner.starts_with('[') {
        return None;
    }
    let mut parts = inner.split('.').map(|p| p.trim().trim_matches('"'));
    let (top, name) = (parts.next()?, parts.next()?);
    (top == "stages" && parts.next().is_none()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_stage_of_a_header() {
        assert_eq!(header_stage("[stages.train] # the model"), Some("train"));
        assert_eq!(header_stage(" [ stages . \"eval\" ]"), Some("eval"));
        assert_eq!(header_stage("[stages.train.params]"), None);
        assert_eq!(header_stage("[[stages.train]]"), None);
        assert_eq!(header_stage("kind = \"cmd\""), None);
    }

    #[test]
    fn duplicate_keys_in_a_params_file_are_not_stages() {
        let text = "[stages.a]\nx = 1\n[stages.a]\n";
        let err = toml::de::DeTable::parse(text).unwrap_err();
        let d = syntax_error(Path::new("stages/p.toml"), text, &err);
        assert_eq!(d.message, "`a` is defined twice");
        assert_eq!((d.line, d.col), (3, 9));
    }
}
