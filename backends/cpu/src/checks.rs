//! Checks of argument *contents* that only a device which can read its memory can make at launch (a GPU
//! reports the same faults at `sync`). Shared by both CPU modes.

use crate::bind::{Args, In};
use dsv3_core::ops::{Access, CachePages, RowSampling, Sample};
use dsv3_core::{DType, Error, Op, Result, Tensor};

/// `expert_offsets` starts at 0, never decreases, and ends at `rows`; returned as usize.
pub fn expert_offsets(op: &'static str, offsets: &In, rows: usize) -> Result<Vec<usize>> {
    let v = offsets.i32s();
    let ok = v.first() == Some(&0) && v.windows(2).all(|w| w[0] <= w[1]) && v.last() == Some(&(rows as i32));
    if !ok {
        return Err(Error::invalid(op, "expert_offsets", format!("must rise from 0 to {rows}, got {v:?}")));
    }
    Ok(v.into_iter().map(|x| x as usize).collect())
}

/// Every id in `0..bound`.
pub fn ids_in_range(op: &'static str, arg: &'static str, ids: &In, bound: usize) -> Result<Vec<usize>> {
    let v = ids.i32s();
    if let Some((i, bad)) = v.iter().enumerate().find(|(_, &x)| x < 0 || x as usize >= bound) {
        return Err(Error::invalid(op, arg, format!("element {i} is {bad}, outside 0..{bound}")));
    }
    Ok(v.into_iter().map(|x| x as usize).collect())
}

/// Every `kv_lens[b]` in `t..=l` (the new tokens are part of the cache, which holds `l` rows).
pub fn kv_lens(op: &'static str, lens: &In, t: usize, l: usize) -> Result<Vec<usize>> {
    let v = lens.i32s();
    if let Some((b, bad)) = v.iter().enumerate().find(|(_, &x)| x < t as i32 || x as usize > l) {
        return Err(Error::invalid(
            op,
            "kv_lens",
            format!("sequence {b} has length {bad}, outside {t}..={l}"),
        ));
    }
    Ok(v.into_iter().map(|x| x as usize).collect())
}

/// The cache row (of the cache viewed as `[P · page, W]`) of each position in `positions[b]` of every
/// sequence `b`, from the op's `block_table` input where it has one: every entry read must name a page of
/// the pool.
pub fn cache_rows(
    op: &'static str,
    args: &Args,
    pages: CachePages,
    positions: &[std::ops::Range<usize>],
) -> Result<Vec<Vec<usize>>> {
    let table = args.input("block_table").ok().map(|t| t.i32s());
    positions
        .iter()
        .enumerate()
        .map(|(b, range)| {
            range
                .clone()
                .map(|u| {
                    pages.row(table.as_deref(), b, u).ok_or_else(|| {
                        let table = table.as_deref().unwrap_or(&[]);
                        let entry = table[b * pages.pages_per_seq + u / pages.page];
                        let why = format!(
                            "sequence {b}, page {}: {entry} is outside the pool's 0..{}",
                            u / pages.page,
                            pages.pool
                        );
                        Error::invalid(op, "block_table", why)
                    })
                })
                .collect()
        })
        .collect()
}

/// Inputs must be finite. Exempt: weight tensors (`b`, `table`), validated once when a checkpoint is
/// loaded (scanning them on every launch would double a decode GEMM's memory traffic), and attention
/// caches (`kv_cache`, `k`, `v`), whose rows past `kv_lens` are ignored by contract and may hold anything.
/// Sampling ops accept −inf logits (a masked token) but not NaN or +inf.
pub fn finite_inputs(op: &Op, tensors: &[(&'static str, &Tensor, Access)], args: &Args) -> Result<()> {
    let allow_neg_inf = matches!(op, Op::Argmax(_) | Op::TopK(_) | Op::Sample(_));
    let ok = |v: f64| v.is_finite() || allow_neg_inf && v == f64::NEG_INFINITY;
    // In argument order, so the error names the same argument whatever the map's order.
    for &(arg, t, access) in tensors {
        if access != Access::Read
            || !t.dtype.is_float()
            || matches!(arg, "b" | "table" | "kv_cache" | "k" | "v")
        {
            continue;
        }
        let input = args.input(arg)?;
        if let Some((index, value)) = first_failing(&input, ok) {
            return Err(Error::NonFinite { op: op.name(), arg, index, value });
        }
    }
    Ok(())
}

/// The first element (logical index) failing `ok`, scanned as bytes without building a decoded copy:
/// the whole view where it is contiguous, else each of its rows where those are (a slice of wider rows,
/// e.g. one head's part of a row); other layouts element by element. `ok` may reject only non-finite
/// values: 16- and 32-bit floats are screened for those first.
fn first_failing(x: &In, ok: impl Fn(f64) -> bool) -> Option<(usize, f64)> {
    let (dtype, shape, strides) = (x.t.dtype, &x.t.shape, &x.t.strides);
    let size = dtype.size();
    // FP8: one byte per value; each of the 256 codes is judged once rather than every element decoded.
    let fp8: Option<(_, [bool; 256])> =
        dtype.fp8_format().map(|f| (f, std::array::from_fn(|c| !ok(f.decode(c as u8) as f64))));
    let run = |bytes: &[u8]| match &fp8 {
        Some((format, fails)) => {
            bytes.iter().position(|&c| fails[c as usize]).map(|i| (i, format.decode(bytes[i]) as f64))
        }
        None => first_failing_float(dtype, bytes, &ok),
    };
    if x.t.is_contiguous() {
        return run(&x.bytes[..x.t.numel() * size]);
    }
    let Some((&width, outer)) = shape.split_last().filter(|_| strides.last() == Some(&1)) else {
        return x.to_f64().into_iter().enumerate().find(|(_, v)| !ok(*v));
    };
    (0..x.t.numel() / width).find_map(|row| {
        // The row's element offset: its index over the outer dimensions, the last one fastest.
        let (mut rest, mut start) = (row, 0);
        for (&dim, &stride) in outer.iter().zip(strides).rev() {
            start += rest % dim * stride;
            rest /= dim;
        }
        run(&x.bytes[start * size..(start + width) * size]).map(|(i, v)| (row * width + i, v))
    })
}

/// [`first_failing`] over contiguous elements of a 16- or 32-bit float dtype (or any other, slowly).
/// Only a value whose exponent bits are all ones (±inf, NaN) can fail, so blocks are screened on their
/// raw words, a loop that vectorises, and only a block holding such a word is decoded one value at a time.
/// Decoding every value to f64 ran at ~0.5 GB/s on one core: 7 ms of a 100 ms 512-row prefill GEMM.
fn first_failing_float(dtype: DType, bytes: &[u8], ok: &impl Fn(f64) -> bool) -> Option<(usize, f64)> {
    const BLOCK: usize = 1024;
    let size = dtype.size();
    let exponent = match dtype {
        DType::F32 => 0x7f80_0000u32,
        DType::BF16 => 0x7f80,
        DType::F16 => 0x7c00,
        _ => 0,
    };
    let special = |block: &[u8]| match size {
        4 => block
            .chunks_exact(4)
            .fold(false, |s, w| s | ((u32::from_le_bytes([w[0], w[1], w[2], w[3]]) & exponent) == exponent)),
        _ => block
            .chunks_exact(2)
            .fold(false, |s, w| s | ((u32::from(u16::from_le_bytes([w[0], w[1]])) & exponent) == exponent)),
    };
    let numel = bytes.len() / size;
    (0..numel).step_by(BLOCK).find_map(|start| {
        let end = (start + BLOCK).min(numel);
        if exponent != 0 && !special(&bytes[start * size..end * size]) {
            return None;
        }
        (start..end).map(|i| (i, dtype.read_f64(bytes, i))).find(|(_, v)| !ok(*v))
    })
}

/// Each row's sampling parameters and the key of its uniforms ([`Sample::row`]), from the op's
/// `row_params` input where it has one: every entry must follow [`RowSampling`]'s rules.
pub fn sample_rows(op: &Sample, args: &Args) -> Result<Vec<(RowSampling, u64)>> {
    let rows = match &op.row_params {
        Some(_) => Some(RowSampling::decode("sample", &args.input("row_params")?.i32s())?),
        None => None,
    };
    Ok((0..op.logits.shape[0]).map(|r| op.row(r, rows.as_deref())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    /// `n` values of `dtype`, all 1.0 but `special` at the given indices, as little-endian bytes.
    fn values(dtype: DType, n: usize, at: &[(usize, f32)]) -> Vec<u8> {
        let value = |i: usize| at.iter().find(|(j, _)| *j == i).map_or(1.0, |(_, v)| *v);
        (0..n)
            .flat_map(|i| match dtype {
                DType::F32 => value(i).to_le_bytes().to_vec(),
                DType::BF16 => bf16::from_f32(value(i)).to_le_bytes().to_vec(),
                _ => f16::from_f32(value(i)).to_le_bytes().to_vec(),
            })
            .collect()
    }

    /// The block screen finds the first failing value wherever it lies (first and last element of a
    /// block, the tail), passes values the rule allows (−inf for sampling ops) and keeps looking past them.
    #[test]
    fn screened_scan_finds_the_first_non_finite_value() {
        let finite = |v: f64| v.is_finite();
        let not_nan_or_pos_inf = |v: f64| v.is_finite() || v == f64::NEG_INFINITY;
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let n = 2500;
            assert_eq!(first_failing_float(dtype, &values(dtype, n, &[]), &finite), None, "{dtype:?}");
            for at in [0, 1023, 1024, 2047, 2048, 2499] {
                let bytes = values(dtype, n, &[(at, f32::NAN), (at.max(2000), f32::INFINITY)]);
                let hit = first_failing_float(dtype, &bytes, &finite);
                assert!(
                    matches!(hit, Some((i, v)) if i == at && v.is_nan()),
                    "{dtype:?} NaN at {at}: {hit:?}"
                );
            }
            let bytes = values(dtype, n, &[(5, f32::NEG_INFINITY), (1500, f32::INFINITY)]);
            assert_eq!(
                first_failing_float(dtype, &bytes, &finite),
                Some((5, f64::NEG_INFINITY)),
                "{dtype:?}"
            );
            let hit = first_failing_float(dtype, &bytes, &not_nan_or_pos_inf);
            assert_eq!(hit, Some((1500, f64::INFINITY)), "{dtype:?}");
        }
    }

    /// A strided view (3 of every 5 values of 7 rows, as one head's part of wider rows) is scanned row
    /// by row: values outside the view are ignored, and the index found is the view's logical index; a
    /// view whose rows are not contiguous (a column) takes the element-by-element path to the same answer.
    #[test]
    fn strided_views_report_the_logical_index() {
        let buffer: dsv3_core::Buffer = std::sync::Arc::new(
            crate::buffer::CpuBuffer::new(
                dsv3_core::DeviceId { backend: "cpu", ordinal: 0, instance: 0 },
                4 * 40,
            )
            .expect("a small buffer"),
        );
        let finite = |v: f64| v.is_finite();
        // Element (r, c) of the [7, 5] array starting at element 1 is stored at 1 + 5r + c.
        let mut data: Vec<f32> = (0..40).map(|i| i as f32).collect();
        data[1 + 5 * 2 + 4] = f32::NAN; // outside the view (column 4)
        data[1 + 5 * 4 + 1] = f32::INFINITY; // view element (4, 1): logical index 4·3 + 1
        data[1 + 5 * 6 + 2] = f32::NAN; // later in the view
        data[1 + 5 * 5] = f32::NAN; // view element (5, 0), also element 5 of the column [7] at stride 5
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = |shape: Vec<usize>, strides: Vec<usize>| Tensor {
            buffer: buffer.clone(),
            offset: 4,
            shape,
            strides,
            dtype: DType::F32,
        };
        let rows = view(vec![7, 3], vec![5, 1]);
        let hit = first_failing(&In { t: &rows, bytes: &bytes[4..] }, finite);
        assert_eq!(hit, Some((13, f64::INFINITY)));
        let column = view(vec![7], vec![5]);
        let hit = first_failing(&In { t: &column, bytes: &bytes[4..] }, finite);
        assert!(matches!(hit, Some((5, v)) if v.is_nan()), "{hit:?}");
        // Three dimensions, (a, b, c) at 1 + 12a + 4b + c: the outer index is split last dimension fastest.
        data[1 + 4] = f32::NEG_INFINITY; // (0, 1, 0): logical index 2
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let cube = view(vec![2, 3, 2], vec![12, 4, 1]);
        let hit = first_failing(&In { t: &cube, bytes: &bytes[4..] }, finite);
        assert_eq!(hit, Some((2, f64::NEG_INFINITY)));
    }
}
