//! The one error type of the library: every failure a caller can cause is a value, not a panic.

use std::fmt;

/// Errors returned by the engine. Each message is one line that names the op or argument at fault.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// No GPU adapter (not even a software one) was found for the requested backends.
    NoAdapter(String),
    /// The adapter refused to create a device.
    Device(String),
    /// An op was given tensors whose shapes do not fit together, or a zero-sized dimension.
    Shape {
        /// The op that rejected the shapes.
        op: &'static str,
        /// What is wrong, with the shapes involved.
        msg: String,
    },
    /// A buffer or dispatch would exceed what the device allows.
    Limit {
        /// The op or allocation that hit the limit.
        op: &'static str,
        /// Which limit, its value, and what was asked for.
        msg: String,
    },
    /// Reading a buffer back from the GPU failed.
    Readback(String),
    /// A setting or an input is invalid. Settings are named by their field in backticks
    /// (`batch_size`), which the CLI shows as its flag (`--batch-size`).
    Invalid(String),
    /// An error already reported where it arose (by the process of a data-parallel run that
    /// met it first): the caller only stops.
    Reported(String),
}

impl Error {
    /// Whether the message still belongs on the caller's stderr (not already reported).
    pub fn reported_here(&self) -> bool {
        !matches!(self, Error::Reported(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoAdapter(m) => write!(f, "no GPU adapter found: {m}"),
            Error::Device(m) => write!(f, "could not open the GPU device: {m}"),
            Error::Shape { op, msg } => write!(f, "{op}: shape error: {msg}"),
            Error::Limit { op, msg } => write!(f, "{op}: device limit exceeded: {msg}"),
            Error::Readback(m) => write!(f, "reading a GPU buffer back failed: {m}"),
            Error::Invalid(m) | Error::Reported(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Error {}

/// Result with the library's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Shorthand for a shape error of `op`.
pub(crate) fn shape_err<T>(op: &'static str, msg: impl Into<String>) -> Result<T> {
    Err(Error::Shape {
        op,
        msg: msg.into(),
    })
}
