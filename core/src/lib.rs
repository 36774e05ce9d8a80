//! dsv3-core: the vocabulary every dsv3 crate shares.

pub mod backend;
pub mod dtype;
pub mod error;
pub mod fp8;
pub mod tensor;

pub use backend::{Backend, Buffer, Capabilities, Device, DeviceBuffer, DeviceId, DeviceInfo, Peak, Stream, Support};
pub use dtype::DType;
pub use error::{Error, Result};
pub use fp8::{Fp8Format, Overflow};
pub use tensor::Tensor;
mod ops_placeholder;
