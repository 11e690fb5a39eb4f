//! Config errors: every problem in a file, each with its key path, line, value and reason.

use std::fmt;
use std::path::PathBuf;

/// One problem in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the problem is, as a key path such as `peers[0].trust_domain`.
    pub path: String,
    /// The 1-based line of the value, where the YAML parser gives one.
    pub line: Option<u64>,
    /// The offending value as written, if there is one.
    pub value: Option<String>,
    /// Why it is wrong.
    pub reason: String,
}

/// Every problem found in one config file. Never empty.
#[derive(Debug)]
pub struct ConfigErrors {
    /// The file, if the config came from one.
    pub file: Option<PathBuf>,
    /// The problems, in file order as far as it is known.
    pub errors: Vec<ConfigError>,
}

impl std::error::Error for ConfigErrors {}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(top level)"
        } else {
            &self.path
        };
        f.write_str(path)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        if let Some(value) = &self.value {
            write!(f, ": {value:?}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.errors.len();
        let noun = if count == 1 { "problem" } else { "problems" };
        match &self.file {
            Some(file) => writeln!(f, "{}: {count} {noun}:", file.display())?,
            None => writeln!(f, "config: {count} {noun}:")?,
        }
        for error in &self.errors {
            writeln!(f, "  - {error}")?;
        }
        Ok(())
    }
}
