//! Moving rows between stored dtypes (f32, bf16, FP8) and f32 scratch, for the fast kernels. A "row" is
//! the innermost dimension of a view whose inner stride is 1; leading dimensions may be strided.

use crate::bind::{In, Out};
use dsv3_core::{DType, Error, Result, Tensor};
use half::bf16;

/// Number of rows and the row length of a view.
pub fn row_shape(t: &Tensor) -> (usize, usize) {
    let n = t.shape.last().copied().unwrap_or(1);
    (t.numel() / n.max(1), n)
}

/// Byte offset of logical row `r` from the view's start.
fn row_offset(t: &Tensor, mut r: usize) -> usize {
    let lead = t.rank().saturating_sub(1);
    let mut elems = 0;
    for d in (0..lead).rev() {
        elems += (r % t.shape[d]) * t.strides[d];
        r /= t.shape[d];
    }
    elems * t.dtype.size()
}

pub fn row<'a>(x: &In<'a>, r: usize) -> &'a [u8] {
    let (_, n) = row_shape(x.t);
    let start = row_offset(x.t, r);
    &x.bytes[start..start + n * x.t.dtype.size()]
}

/// The output's rows as disjoint mutable slices, in logical order. Fails if a view's strides make two
/// rows overlap (which would make parallel writes race).
pub fn rows_mut<'a>(op: &'static str, arg: &'static str, out: Out<'a>) -> Result<Vec<&'a mut [u8]>> {
    let (rows, n) = row_shape(out.t);
    let width = n * out.t.dtype.size();
    let mut starts: Vec<(usize, usize)> = (0..rows).map(|r| (row_offset(out.t, r), r)).collect();
    starts.sort_unstable();
    let mut slots: Vec<Option<&'a mut [u8]>> = (0..rows).map(|_| None).collect();
    let mut rest = out.bytes;
    let mut consumed = 0;
    for (start, r) in starts {
        if start < consumed {
            return Err(Error::invalid(op, arg, format!("rows of {:?} overlap", out.t)));
        }
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(start - consumed);
        let (row, tail) = tail.split_at_mut(width);
        slots[r] = Some(row);
        rest = tail;
        consumed = start + width;
    }
    Ok(slots.into_iter().map(|s| s.expect("every row placed")).collect())
}

/// Decode `dst.len()` elements of `dtype` from `src` to f32 (exact for every supported dtype).
pub fn load(dtype: DType, src: &[u8], dst: &mut [f32]) {
    match dtype {
        DType::F32 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            }
        }
        DType::BF16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = bf16::from_bits(u16::from_le_bytes([s[0], s[1]])).to_f32();
            }
        }
        _ => {
            for (i, d) in dst.iter_mut().enumerate() {
                *d = dtype.read_f64(src, i) as f32;
            }
        }
    }
}

/// Round f32 values to `dtype` (nearest even; FP8 saturates) into `dst`.
pub fn store(dtype: DType, src: &[f32], dst: &mut [u8]) {
    match dtype {
        DType::F32 => {
            for (d, s) in dst.chunks_exact_mut(4).zip(src) {
                d.copy_from_slice(&s.to_le_bytes());
            }
        }
        DType::BF16 => {
            for (d, s) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&bf16::from_f32(*s).to_bits().to_le_bytes());
            }
        }
        _ => match dtype.fp8_format() {
            Some(format) => dst.iter_mut().zip(src).for_each(|(d, s)| *d = format.encode_saturating(*s)),
            None => src.iter().enumerate().for_each(|(i, s)| dtype.write_f64(dst, i, *s as f64)),
        },
    }
}

/// Load a whole view as f32 in logical order.
pub fn load_all(x: &In) -> Vec<f32> {
    let (rows, n) = row_shape(x.t);
    let mut v = vec![0.0; rows * n];
    for r in 0..rows {
        load(x.t.dtype, row(x, r), &mut v[r * n..(r + 1) * n]);
    }
    v
}
