//! A user mistake located in a file: rendered like a compiler error, with the line and a caret.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct Diagnostic {
    pub message: String,
    /// File and 1-based line:col; None for mistakes not tied to a file position.
    /// The path is the one shown to the user: workspace-relative ("Stagefile", "stages/train.toml")
    /// for files of the workspace. `line == 0` means the mistake is about the whole file.
    pub file: Option<PathBuf>,
    pub line: usize,
    /// 1-based, counted in characters (not bytes).
    pub col: usize,
    /// The source line and the length of the span to underline (in characters, within that line).
    pub source_line: Option<String>,
    pub span_len: usize,
    /// What to do: "did you mean `cmd`?", "create stages/train.toml or remove `params`".
    pub help: Option<String>,
}

/// One or more diagnostics, rendered one after another.
#[derive(Clone, Debug)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostic {
    /// A mistake not tied to a position in a file.
    pub fn error(message: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            file: None,
            line: 0,
            col: 0,
            source_line: None,
            span_len: 0,
            help: None,
        }
    }

    /// A mistake at byte range `span` of `text`, the content of `file` (the path to show).
    pub fn at(file: &Path, text: &str, span: Range<usize>, message: impl Into<String>) -> Self {
        let (line, col, source_line, span_len) = locate(text, span);
        Diagnostic {
            file: Some(file.to_path_buf()),
            line,
            col,
            source_line: Some(source_line.to_string()),
            span_len,
            ..Diagnostic::error(message)
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Attach the diagnostic to a whole file, without a position.
    pub fn in_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.file = Some(file.into());
        self
    }
}

/// Turn a byte span into (1-based line, 1-based char column, the line's text, underline length).
/// Spans running past the end of their first line are underlined to the end of that line.
fn locate(text: &str, span: Range<usize>) -> (usize, usize, &str, usize) {
    let start = floor_char_boundary(text, span.start.min(text.len()));
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line_no = text[..line_start].bytes().filter(|&b| b == b'\n').count() + 1;
    let col = text[line_start..start].chars().count() + 1;
    let end = floor_char_boundary(text, span.end.clamp(start, line_end));
    let span_len = text[start..end].chars().count().max(1);
    let source_line = text[line_start..line_end].trim_end_matches('\r');
    (line_no, col, source_line, span_len)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The closest of `candidates` to `word`, if close enough to be a plausible typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        let distance = strsim::damerau_levenshtein(word, candidate);
        let similar = strsim::normalized_damerau_levenshtein(word, candidate) >= 0.7;
        // A small edit counts only when it leaves part of the word intact:
        // "b" is not a typo of "a".
        let small_edit = distance <= 2 && distance < word.len().min(candidate.len());
        if (similar || small_edit) && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// "`a`, `b`, `c`" — for helps that list the valid choices.
pub fn list_choices<'a>(choices: impl IntoIterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = choices.into_iter().map(|c| format!("`{c}`")).collect();
    quoted.join(", ")
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        let has_line = self.line > 0;
        // The gutter is as wide as the line number, as in rustc.
        let gutter = if has_line {
            self.line.to_string().len()
        } else {
            1
        };
        let pad = " ".repeat(gutter);
        if let Some(file) = &self.file {
            write!(f, "\n{pad}--> {}", file.display())?;
            if has_line {
                write!(f, ":{}:{}", self.line, self.col)?;
            }
        }
        if let (Some(source), true) = (&self.source_line, has_line) {
            // Keep tabs in the caret prefix so the caret lines up under the source.
            let prefix: String = source
                .chars()
                .take(self.col.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let carets = "^".repeat(self.span_len.max(1));
            write!(f, "\n{pad} |")?;
            write!(f, "\n{} | {source}", self.line)?;
            write!(f, "\n{pad} | {prefix}{carets}")?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n{pad} = help: {help}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n\n")?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl From<Diagnostic> for Diagnostics {
    fn from(diagnostic: Diagnostic) -> Self {
        Diagnostics(vec![diagnostic])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_rustc() {
        let text = "[stages.prepare]\nkind = \"cmd\"\ncmdd = \"python3 prep.py\"\n";
        let start = text.find("cmdd").unwrap();
        let d = Diagnostic::at(
            Path::new("Stagefile"),
            text,
            start..start + 4,
            "unknown key `cmdd` in stage `prepare`",
        )
        .with_help("did you mean `cmd`?");
        let expected = "error: unknown key `cmdd` in stage `prepare`
 --> Stagefile:3:1
  |
3 | cmdd = \"python3 prep.py\"
  | ^^^^
  = help: did you mean `cmd`?";
        assert_eq!(d.to_string(), expected);
    }

    #[test]
    fn columns_count_characters_and_gutter_grows() {
        let mut text = "\n".repeat(11);
        text.push_str("x = \"é\" # ü\n");
        let start = text.find('#').unwrap();
        let d = Diagnostic::at(Path::new("f.toml"), &text, start..start + 1, "m");
        assert_eq!((d.line, d.col), (12, 9));
        let rendered = d.to_string();
        let expected = "\n  --> f.toml:12:9\n   |\n12 | x = \"é\" # ü\n   |         ^";
        assert!(rendered.contains(expected), "{rendered}");
    }

    #[test]
    fn multi_line_span_underlines_to_end_of_line() {
        let text = "a = [\n  1,\n]\n";
        let d = Diagnostic::at(Path::new("f"), text, 4..text.len(), "m");
        assert_eq!((d.line, d.col, d.span_len), (1, 5, 1));
    }

    #[test]
    fn diagnostics_are_separated_by_a_blank_line() {
        let ds = Diagnostics(vec![
            Diagnostic::error("one").with_help("fix one"),
            Diagnostic::error("two").in_file("Stagefile"),
        ]);
        assert_eq!(
            ds.to_string(),
            "error: one\n  = help: fix one\n\nerror: two\n --> Stagefile"
        );
    }

    #[test]
    fn suggestions_only_when_close() {
        let keys = ["kind", "cmd", "needs", "inputs", "outs"];
        assert_eq!(did_you_mean("cmdd", keys), Some("cmd"));
        assert_eq!(did_you_mean("inptus", keys), Some("inputs"));
        assert_eq!(did_you_mean("dependencies", keys), None);
        assert_eq!(did_you_mean("b", ["a", "c"]), None);
    }
}
