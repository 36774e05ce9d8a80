//! One error type for every layer. Each variant names what a user needs to find the fault: the backend,
//! the op, the kernel, the argument, the file or field.

use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend cannot run on this machine at all (no driver, no library, no device).
    #[error("{backend}: unavailable: {reason}")]
    Unavailable { backend: String, reason: String },

    /// The device exists but does not implement this op with these dtypes / shapes.
    #[error("{backend}: op `{op}` unsupported: {reason}")]
    Unsupported { backend: String, op: &'static str, reason: String },

    /// A caller passed something the op's contract rejects (shape, dtype, size, alignment, aliasing).
    #[error("op `{op}`: argument `{arg}`: {reason}")]
    InvalidArgument { op: &'static str, arg: &'static str, reason: String },

    /// An input holds NaN or ±Inf where the op requires finite values.
    #[error("op `{op}`: argument `{arg}` is not finite at element {index} ({value})")]
    NonFinite { op: &'static str, arg: &'static str, index: usize, value: f64 },

    /// A buffer was used out of its bounds, on the wrong device, or after a failed allocation.
    #[error("{backend}: buffer: {reason}")]
    Buffer { backend: String, reason: String },

    /// The device could not provide the memory.
    #[error("{backend}: out of memory allocating {bytes} bytes")]
    OutOfMemory { backend: String, bytes: usize },

    /// A kernel failed to compile or launch, or reported an error at the next `sync`.
    #[error("{backend}: kernel `{kernel}` for op `{op}` failed: {reason}")]
    Kernel { backend: String, op: &'static str, kernel: String, reason: String },

    /// A driver / runtime call failed outside any op.
    #[error("{backend}: driver call `{call}` failed: {reason}")]
    Driver { backend: String, call: String, reason: String },

    /// A data file (checkpoint, fixture, config) is malformed.
    #[error("{file}: field `{field}`: {reason}")]
    Data { file: String, field: String, reason: String },

    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

impl Error {
    pub fn invalid(op: &'static str, arg: &'static str, reason: impl fmt::Display) -> Self {
        Error::InvalidArgument { op, arg, reason: reason.to_string() }
    }

    pub fn unsupported(backend: &str, op: &'static str, reason: impl fmt::Display) -> Self {
        Error::Unsupported { backend: backend.to_string(), op, reason: reason.to_string() }
    }
}
