//! The statuses a run and a build are recorded with. The database holds them as text (`'ran'`,
//! `'ok'`, …), which `vlmflow query` users and existing databases depend on: `as_str` is that text,
//! exactly, and nothing outside SQL compares the text itself.

use std::fmt;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// How a run ended, or that it has not yet (the `runs.status` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunStatus {
    Running,
    Ran,
    Restored,
    Failed,
    Interrupted,
}

/// How a build ended, or that it has not yet (the `builds.status` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BuildStatus {
    Running,
    Ok,
    Failed,
    Interrupted,
}

impl RunStatus {
    const ALL: [RunStatus; 5] = [
        RunStatus::Running,
        RunStatus::Ran,
        RunStatus::Restored,
        RunStatus::Failed,
        RunStatus::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Ran => "ran",
            RunStatus::Restored => "restored",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(text: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// A run that left an artifact (it ran, or restored one).
    pub fn succeeded(self) -> bool {
        matches!(self, RunStatus::Ran | RunStatus::Restored)
    }
}

impl BuildStatus {
    const ALL: [BuildStatus; 4] = [
        BuildStatus::Running,
        BuildStatus::Ok,
        BuildStatus::Failed,
        BuildStatus::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Running => "running",
            BuildStatus::Ok => "ok",
            BuildStatus::Failed => "failed",
            BuildStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(text: &str) -> Option<BuildStatus> {
        BuildStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Both enums are stored, shown and serialized as their text.
macro_rules! as_text {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $t {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                <$t>::parse(text)
                    .ok_or_else(|| FromSqlError::Other(format!("unknown status `{text}`").into()))
            }
        }
    };
}

as_text!(RunStatus);
as_text!(BuildStatus);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_text_reads_back_as_the_same_status() {
        for s in RunStatus::ALL {
            assert_eq!(RunStatus::parse(s.as_str()), Some(s));
        }
        for s in BuildStatus::ALL {
            assert_eq!(BuildStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(RunStatus::parse("ok"), None);
        assert_eq!(BuildStatus::parse("ran"), None);
    }

    #[test]
    fn the_text_is_what_the_schema_allows() {
        let runs: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            runs,
            ["running", "ran", "restored", "failed", "interrupted"]
        );
        let builds: Vec<&str> = BuildStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(builds, ["running", "ok", "failed", "interrupted"]);
    }
}
