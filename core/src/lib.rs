//! dsv3-core: the vocabulary every dsv3 crate shares — dtypes (FP8 included), tensor views, the op set
//! with its numerics contracts, the backend traits and the error type.

pub mod backend;
pub mod dtype;
pub mod error;
pub mod fnuz;
pub mod fp8;
pub mod move_check;
pub mod ops;
pub mod rope;
pub mod tensor;
pub mod testing;
pub mod transfer;

pub use backend::{
    Backend, Buffer, Capabilities, DTypeUsage, Device, DeviceBuffer, DeviceId, DeviceInfo, Event, Finished,
    Graph, Peak, Stream, Support,
};
pub use dtype::DType;
pub use error::{Error, Result};
pub use fp8::{Fp8Format, Overflow};
pub use ops::Op;
pub use tensor::Tensor;
