//! Moving rows between stored dtypes (f32, bf16, FP8) and f32 scratch, for the fast kernels. A "row" is
//! the innermost dimension of a view whose inner stride is 1; leading dimensions may be strided.

use super::scratch::Scratch;
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
    let starts = (0..rows).map(|r| row_offset(out.t, r));
    let mut placed = Vec::with_capacity(rows);
    // Rows in address order (every view the model writes): split off in turn, nothing to sort.
    if starts.clone().is_sorted() {
        split_rows(op, arg, out, width, starts, |row| placed.push(row))?;
        return Ok(placed);
    }
    let mut order: Vec<(usize, usize)> = starts.zip(0..rows).collect();
    order.sort_unstable();
    let mut slots: Vec<Option<&'a mut [u8]>> = (0..rows).map(|_| None).collect();
    let mut rows_in_order = order.iter().map(|&(_, r)| r);
    split_rows(op, arg, out, width, order.iter().map(|&(start, _)| start), |row| {
        slots[rows_in_order.next().expect("one row per start")] = Some(row)
    })?;
    placed.extend(slots.into_iter().map(|s| s.expect("every row placed")));
    Ok(placed)
}

/// Splits `out`'s bytes at `starts` (ascending byte offsets of rows `width` bytes long), handing each row
/// to `place` in that order; fails if two rows overlap.
fn split_rows<'a>(
    op: &'static str,
    arg: &'static str,
    out: Out<'a>,
    width: usize,
    starts: impl Iterator<Item = usize>,
    mut place: impl FnMut(&'a mut [u8]),
) -> Result<()> {
    let mut rest = out.bytes;
    let mut consumed = 0;
    for start in starts {
        if start < consumed {
            return Err(Error::invalid(op, arg, format!("rows of {:?} overlap", out.t)));
        }
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(start - consumed);
        let (row, tail) = tail.split_at_mut(width);
        place(row);
        rest = tail;
        consumed = start + width;
    }
    Ok(())
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
                *d = bf16_bits_to_f32(u16::from_le_bytes([s[0], s[1]]));
            }
        }
        _ => {
            for (i, d) in dst.iter_mut().enumerate() {
                *d = dtype.read_f64(src, i) as f32;
            }
        }
    }
}

/// `bf16::to_f32` of `half` bit for bit (the bits moved to the top half; a NaN made quiet), written as
/// a select so that [`load`]'s loop vectorises: attention converts every cached row it reads.
fn bf16_bits_to_f32(bits: u16) -> f32 {
    let bits = u32::from(bits);
    f32::from_bits(if bits & 0x7fff > 0x7f80 { (bits | 0x40) << 16 } else { bits << 16 })
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
pub fn load_all(x: &In) -> Scratch {
    let (rows, n) = row_shape(x.t);
    let mut v = Scratch::zeroed(rows * n);
    for r in 0..rows {
        load(x.t.dtype, row(x, r), &mut v[r * n..(r + 1) * n]);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::CpuBuffer;
    use dsv3_core::DeviceId;
    use std::sync::Arc;

    /// The bf16 decode is `half`'s for every one of the 65536 bit patterns, NaN payloads included.
    #[test]
    fn bf16_decode_matches_half_bit_for_bit() {
        for bits in 0..=u16::MAX {
            let want = bf16::from_bits(bits).to_f32().to_bits();
            assert_eq!(bf16_bits_to_f32(bits).to_bits(), want, "bf16 bits {bits:#06x}");
        }
    }

    /// Rows come back in logical order whether the view stores them in address order (split in turn)
    /// or not (sorted first), and rows that share bytes are refused.
    #[test]
    fn rows_mut_gives_logical_rows_and_refuses_overlap() {
        let device = DeviceId { backend: "cpu", ordinal: 0, instance: 0 };
        let buffer: dsv3_core::Buffer = Arc::new(CpuBuffer::new(device, 8).expect("a small buffer"));
        let view = |shape: Vec<usize>, strides: Vec<usize>| Tensor {
            buffer: buffer.clone(),
            offset: 0,
            shape,
            strides,
            dtype: DType::U8,
        };
        // Rows of 2 bytes; [2, 2, 2] with the two lead dimensions swapped: rows at 0, 4, 2, 6.
        let mut bytes: Vec<u8> = (0..8).collect();
        for (t, want) in [
            (view(vec![4, 2], vec![2, 1]), [[0, 1], [2, 3], [4, 5], [6, 7]]),
            (view(vec![2, 2, 2], vec![2, 4, 1]), [[0, 1], [4, 5], [2, 3], [6, 7]]),
        ] {
            let rows = rows_mut("test", "out", Out { t: &t, bytes: &mut bytes }).expect("disjoint rows");
            let got: Vec<Vec<u8>> = rows.into_iter().map(|r| r.to_vec()).collect();
            assert_eq!(got, want.map(|r| r.to_vec()).to_vec(), "{t:?}");
        }
        for t in [view(vec![3, 2], vec![1, 1]), view(vec![2, 2, 2], vec![1, 2, 1])] {
            let overlap = rows_mut("test", "out", Out { t: &t, bytes: &mut bytes });
            assert!(matches!(overlap, Err(Error::InvalidArgument { .. })), "{t:?}");
        }
    }
}
