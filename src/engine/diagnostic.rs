//! CONTRACT STUB — helper A replaces this file.
//! A user mistake located in a file: rendered like a compiler error, with the line and a caret.

use std::fmt;
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub struct Diagnostic {
    pub message: String,
    /// File and 1-based line:col; None for mistakes not tied to a file position.
    pub file: Option<PathBuf>,
    pub line: usize,
    pub col: usize,
    /// The source line and the length of the span to underline.
    pub source_line: Option<String>,
    pub span_len: usize,
    /// What to do: "did you mean `cmd`?", "create stages/train.toml or remove `params`".
    pub help: Option<String>,
}

/// One or more diagnostics, rendered one after another.
#[derive(Clone, Debug)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostic {
    fn fmt(&self, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        unimplemented!()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        unimplemented!()
    }
}

impl std::error::Error for Diagnostics {}
