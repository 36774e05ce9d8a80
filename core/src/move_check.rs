//! The check the backends' tests share for `transfer::move_tensor`: a strided view, at an offset into its
//! buffer, moved from one device to another arrives bit for bit, with its shape, strides and dtype, on the
//! destination device. It panics on any difference (it is for tests).

use crate::backend::{Device, Stream};
use crate::dtype::DType;
use crate::tensor::Tensor;
use crate::transfer::move_tensor;

/// Moves a `[10, 12]` i32 view starting 24 bytes into a 1000-byte buffer of patterned bytes (no two alike
/// in any 251-byte window, so a shifted copy differs) from `src` to `dst`, and checks what arrived.
pub fn assert_moves_bitwise(
    src: &dyn Device,
    src_stream: &dyn Stream,
    dst: &dyn Device,
    dst_stream: &dyn Stream,
) {
    let path = format!("{} -> {}", src.id(), dst.id());
    let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
    let buffer = src.alloc(bytes.len()).unwrap();
    src_stream.upload(&buffer, 0, &bytes).unwrap();
    let t = Tensor { buffer, offset: 24, shape: vec![10, 12], strides: vec![12, 1], dtype: DType::I32 };
    let moved = move_tensor(&t, src_stream, dst, dst_stream).unwrap();
    assert_eq!(moved.buffer.device_id(), dst.id(), "{path}: device");
    assert_eq!((&moved.shape, &moved.strides, moved.dtype), (&t.shape, &t.strides, t.dtype), "{path}: view");
    let mut back = vec![0u8; moved.span_bytes()];
    dst_stream.download(&moved.buffer, moved.offset, &mut back).unwrap();
    assert_eq!(back, bytes[24..24 + 480], "{path}: bytes");
}
