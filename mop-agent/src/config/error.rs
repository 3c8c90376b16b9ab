//! The one error type of the configuration module.
//!
//! Every variant names where the bad setting came from (a YAML key path such as
//! `otel_traces_export.protocol`, or an environment variable), the value that was given and
//! what is accepted, so `mop-agent config check` can print one actionable line per problem.

use std::{fmt, path::PathBuf};

/// Where a setting came from: a key in the YAML file or an environment variable.
///
/// Exists so that one error variant can name either origin the same way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A dotted YAML key path with list indices, e.g. `discovery.instrument[0].open_ports`.
    Key(String),
    /// An environment variable, e.g. `OTEL_EXPORTER_OTLP_PROTOCOL`.
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key(key) => write!(f, "`{key}`"),
            Self::Env(var) => write!(f, "environment variable {var}"),
        }
    }
}

/// Everything that can be wrong with a configuration.
///
/// [`crate::config::Config::load`] collects every problem it can find before returning, and
/// wraps more than one in [`ConfigError::Multiple`]; [`ConfigError::iter`] walks them.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        /// The file that was named by `--config` or `OTEL_EBPF_CONFIG_PATH`.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML (syntax error, duplicate key, ...).
    #[error("invalid yaml: {message}")]
    Yaml {
        /// The parser's message, with line and column where known.
        message: String,
    },
    /// A key that neither mop nor OBI knows.
    #[error("unknown key `{key}`{}", suggestion_text(suggestion.as_deref()))]
    UnknownKey {
        /// Full key path.
        key: String,
        /// A known key at the same level with a similar spelling.
        suggestion: Option<String>,
    },
    /// An OBI key that mop recognises but does not implement yet.
    #[error("`{key}` is not supported by mop yet{}", note_text(note))]
    UnsupportedKey {
        /// Full key path.
        key: String,
        /// What to use instead, or empty.
        note: &'static str,
    },
    /// An OBI environment variable that mop recognises but does not implement yet.
    #[error(
        "environment variable {var} is not supported by mop yet{}",
        note_text(note)
    )]
    UnsupportedEnv {
        /// The variable's name.
        var: String,
        /// What to use instead, or empty.
        note: &'static str,
    },
    /// A value of the wrong shape, e.g. a list where a string is expected.
    #[error("{origin}: expected {expected}, found {found}")]
    WrongType {
        /// Where the value came from.
        origin: Origin,
        /// What the key accepts.
        expected: String,
        /// What was given, e.g. `a list [1, 2]`.
        found: String,
    },
    /// A value of the right shape that is out of range or unparsable.
    #[error("{origin}: invalid value `{value}`: expected {expected}")]
    InvalidValue {
        /// Where the value came from.
        origin: Origin,
        /// The value as given.
        value: String,
        /// What is accepted.
        expected: String,
    },
    /// A value that OBI accepts but mop does not implement yet.
    #[error("{origin}: value `{value}` is not supported by mop yet (supported: {supported})")]
    UnsupportedValue {
        /// Where the value came from.
        origin: Origin,
        /// The value as given.
        value: String,
        /// The values mop implements.
        supported: String,
    },
    /// Several problems; never nested, never empty.
    #[error("{} configuration errors:{}", .0.len(), list_text(.0))]
    Multiple(Vec<ConfigError>),
}

impl ConfigError {
    /// Every individual problem: the error itself, or each member of `Multiple`.
    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        let slice = match self {
            Self::Multiple(errors) => errors.as_slice(),
            single => std::slice::from_ref(single),
        };
        slice.iter()
    }

    /// Wraps a list of problems: `None` when empty, the error itself when alone.
    pub(crate) fn from_list(mut errors: Vec<ConfigError>) -> Option<ConfigError> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(Self::Multiple(errors)),
        }
    }
}

fn suggestion_text(suggestion: Option<&str>) -> String {
    suggestion.map_or_else(String::new, |s| format!(" (did you mean `{s}`?)"))
}

fn note_text(note: &str) -> String {
    if note.is_empty() {
        String::new()
    } else {
        format!(" ({note})")
    }
}

fn list_text(errors: &[ConfigError]) -> String {
    use std::fmt::Write as _;
    errors.iter().fold(String::new(), |mut s, e| {
        let _ = write!(s, "\n  {e}");
        s
    })
}
