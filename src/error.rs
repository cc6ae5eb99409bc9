//! The one error type of the library: every fallible operation returns `Result<T, Error>`.
//!
//! Variants carry what a user needs to fix the input: the field or tensor, the expected and the
//! found value, or the operation and shapes involved. Library code never panics on user input;
//! only `main.rs` turns an error into an exit code.

use std::fmt;

/// Errors of infodiff.
#[derive(Debug)]
pub enum Error {
    /// A configuration value is invalid. `field` is a JSON path such as `mixture.components[2].weight`.
    Config {
        field: String,
        expected: String,
        found: String,
    },
    /// Two operands disagree in shape.
    Shape {
        op: &'static str,
        expected: String,
        found: String,
    },
    /// A non-finite value appeared while sampling.
    NonFinite {
        op: &'static str,
        step: usize,
        t: f64,
        what: String,
    },
    /// A request the engine cannot serve as asked (for example the online classifier on a
    /// deterministic sampler with a model that has no exact posterior).
    Unsupported { op: &'static str, reason: String },
    /// Reading or writing a file failed.
    Io {
        path: String,
        source: std::io::Error,
    },
    /// A file is not valid JSON, or JSON of the wrong form.
    Json { path: String, message: String },
    /// A model folder or tensor file that cannot be used as given: a missing, mis-shaped,
    /// non-finite or unexpected tensor, an unsupported dtype, a corrupt or non-UTF-8 file.
    /// `tensor` names the tensor (empty for the file as a whole).
    Model {
        path: String,
        tensor: String,
        expected: String,
        found: String,
    },
    /// A recorded quantity outside the range where it means anything (a non-finite value, an
    /// entropy outside [0, ln K]): the run's numbers are refused instead of written.
    Implausible {
        quantity: String,
        step: usize,
        t: f64,
        expected: String,
        found: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn config(
        field: impl Into<String>,
        expected: impl Into<String>,
        found: impl fmt::Display,
    ) -> Self {
        Error::Config {
            field: field.into(),
            expected: expected.into(),
            found: found.to_string(),
        }
    }
    pub fn shape(op: &'static str, expected: impl fmt::Debug, found: impl fmt::Debug) -> Self {
        Error::Shape {
            op,
            expected: format!("{expected:?}"),
            found: format!("{found:?}"),
        }
    }
    /// A model error naming the file, the tensor and the expected vs found value.
    pub fn model(
        path: impl Into<String>,
        tensor: impl Into<String>,
        expected: impl Into<String>,
        found: impl fmt::Display,
    ) -> Self {
        Error::Model {
            path: path.into(),
            tensor: tensor.into(),
            expected: expected.into(),
            found: found.to_string(),
        }
    }
    /// Whether the error is the input's fault (exit code 2): a config or override, a JSON or
    /// text file, a model folder or tensor file, the shape of an input tensor. Everything else
    /// (I/O, non-finite results, unsupported requests) exits 1.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Error::Config { .. } | Error::Json { .. } | Error::Model { .. } | Error::Shape { .. }
        )
    }
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config {
                field,
                expected,
                found,
            } => {
                write!(
                    f,
                    "invalid config: `{field}`: expected {expected}, found {found}"
                )
            }
            Error::Shape {
                op,
                expected,
                found,
            } => {
                write!(
                    f,
                    "{op}: shape mismatch: expected {expected}, found {found}"
                )
            }
            Error::NonFinite { op, step, t, what } => {
                write!(f, "{op}: non-finite {what} at step {step} (t = {t})")
            }
            Error::Unsupported { op, reason } => write!(f, "{op}: {reason}"),
            Error::Io { path, source } => write!(f, "{path}: {source}"),
            Error::Json { path, message } => write!(f, "{path}: {message}"),
            Error::Model {
                path,
                tensor,
                expected,
                found,
            } => {
                if tensor.is_empty() {
                    write!(f, "{path}: expected {expected}, found {found}")
                } else {
                    write!(
                        f,
                        "{path}: tensor `{tensor}`: expected {expected}, found {found}"
                    )
                }
            }
            Error::Implausible {
                quantity,
                step,
                t,
                expected,
                found,
            } => write!(
                f,
                "measure: `{quantity}` at step {step} (t = {t}) is {found}, expected {expected}; \
                 the run's numbers are not meaningful and were not written"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
