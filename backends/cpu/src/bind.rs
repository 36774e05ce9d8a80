//! Turning an op's tensors into host slices, without `unsafe`: lock every distinct buffer (in address
//! order, so concurrent launches cannot deadlock), carve each output's byte range out with
//! `split_at_mut`, and hand out shared slices of what lies between. This relies on `Op::validate`, which
//! has already rejected outputs that overlap any other argument.

use crate::buffer::{bytes_mut, CpuBuffer};
use dsv3_core::ops::Access;
use dsv3_core::{DType, Error, Op, Result, Tensor};
use smallvec::SmallVec;
use std::sync::MutexGuard;

/// Inline capacity of the per-launch lists below: more than any op's argument count, so that binding a
/// launch's arguments allocates nothing.
const ARGS: usize = 8;

/// An input: the tensor and the bytes from its offset to the end of its view.
#[derive(Clone, Copy)]
pub struct In<'a> {
    pub t: &'a Tensor,
    pub bytes: &'a [u8],
}

/// An output, same shape of data, writable.
pub struct Out<'a> {
    pub t: &'a Tensor,
    pub bytes: &'a mut [u8],
}

/// An op's arguments by name. An op has a handful, so an inline list searched by name beats a hash map:
/// this is built on every launch, and a decode step of a small model is hundreds of launches.
pub struct Args<'a> {
    op: &'static str,
    inputs: SmallVec<[(&'static str, In<'a>); ARGS]>,
    outputs: SmallVec<[(&'static str, Out<'a>); ARGS]>,
}

impl<'a> Args<'a> {
    pub fn input(&self, name: &'static str) -> Result<In<'a>> {
        let found = self.inputs.iter().find(|(n, _)| *n == name).map(|(_, t)| *t);
        found.ok_or_else(|| Error::invalid(self.op, name, "missing input"))
    }

    pub fn output(&mut self, name: &'static str) -> Result<Out<'a>> {
        let found = self.outputs.iter().position(|(n, _)| *n == name).map(|i| self.outputs.swap_remove(i).1);
        found.ok_or_else(|| Error::invalid(self.op, name, "missing output"))
    }
}

pub fn cpu_buffer<'t>(op: &'static str, arg: &'static str, t: &'t Tensor) -> Result<&'t CpuBuffer> {
    t.buffer.as_any().downcast_ref::<CpuBuffer>().ok_or_else(|| {
        Error::invalid(op, arg, format!("buffer of {} is not CPU memory", t.buffer.device_id()))
    })
}

/// Locks the buffers of `op` (its `tensors`, as [`Op::tensors`] lists them) and runs `f` with its
/// arguments as slices.
pub fn with_args<R>(
    op: &Op,
    tensors: &[(&'static str, &Tensor, Access)],
    f: impl FnOnce(Args<'_>) -> Result<R>,
) -> Result<R> {
    let name = op.name();
    // Each argument's buffer, then the distinct buffers.
    let owners: SmallVec<[&CpuBuffer; ARGS]> =
        tensors.iter().map(|(arg, t, _)| cpu_buffer(name, arg, t)).collect::<Result<_>>()?;
    let mut buffers: SmallVec<[&CpuBuffer; ARGS]> = SmallVec::new();
    for b in &owners {
        if !buffers.iter().any(|x| std::ptr::eq(*x, *b)) {
            buffers.push(b);
        }
    }
    buffers.sort_by_key(|b| *b as *const CpuBuffer as usize);
    let mut guards: SmallVec<[MutexGuard<'_, Vec<u64>>; ARGS]> = buffers.iter().map(|b| b.lock()).collect();

    let mut args = Args { op: name, inputs: SmallVec::new(), outputs: SmallVec::new() };
    for (buffer, guard) in buffers.iter().zip(guards.iter_mut()) {
        let mut rest: &mut [u8] = bytes_mut(guard, buffer.len_bytes());
        let mut rest_start = 0usize;
        let mine: SmallVec<[&(&'static str, &Tensor, Access); ARGS]> = tensors
            .iter()
            .zip(&owners)
            .filter(|(_, owner)| std::ptr::eq(**owner, *buffer))
            .map(|(t, _)| t)
            .collect();
        let mut writes: SmallVec<[_; ARGS]> = mine.iter().filter(|(_, _, a)| *a != Access::Read).collect();
        writes.sort_by_key(|(_, t, _)| t.offset);
        // Shared gaps between outputs, as (start, bytes).
        let mut gaps: SmallVec<[(usize, &[u8]); ARGS]> = SmallVec::new();
        for (arg, t, _) in writes {
            let range = t.byte_range();
            if range.is_empty() {
                // An empty view touches nothing, wherever its offset points.
                args.outputs.push((arg, Out { t, bytes: &mut [] }));
                continue;
            }
            let (gap, tail) = std::mem::take(&mut rest).split_at_mut(range.start - rest_start);
            let (out, tail) = tail.split_at_mut(range.len());
            gaps.push((rest_start, gap));
            args.outputs.push((arg, Out { t, bytes: out }));
            rest = tail;
            rest_start = range.end;
        }
        gaps.push((rest_start, rest));
        for (arg, t, _) in mine.iter().filter(|(_, _, a)| *a == Access::Read) {
            let range = t.byte_range();
            if range.is_empty() {
                args.inputs.push((arg, In { t, bytes: &[] }));
                continue;
            }
            let (start, gap) = gaps
                .iter()
                .find(|(s, g)| *s <= range.start && range.end <= s + g.len())
                .ok_or_else(|| Error::invalid(name, arg, "input overlaps an output"))?;
            args.inputs.push((arg, In { t, bytes: &gap[range.start - start..range.end - start] }));
        }
    }
    f(args)
}

impl CpuBuffer {
    fn len_bytes(&self) -> usize {
        dsv3_core::DeviceBuffer::len(self)
    }
}

/// Typed views of contiguous-row data, for kernels that work on native types.
pub fn typed<'b, T: bytemuck::Pod>(op: &'static str, arg: &'static str, bytes: &'b [u8]) -> Result<&'b [T]> {
    let whole = bytes.len() - bytes.len() % std::mem::size_of::<T>();
    if whole == 0 {
        return Ok(&[]); // an empty view may sit at any address
    }
    bytemuck::try_cast_slice(&bytes[..whole])
        .map_err(|e| Error::invalid(op, arg, format!("misaligned data: {e}")))
}

pub fn typed_mut<'b, T: bytemuck::Pod>(
    op: &'static str,
    arg: &'static str,
    bytes: &'b mut [u8],
) -> Result<&'b mut [T]> {
    let whole = bytes.len() - bytes.len() % std::mem::size_of::<T>();
    if whole == 0 {
        return Ok(&mut []);
    }
    bytemuck::try_cast_slice_mut(&mut bytes[..whole])
        .map_err(|e| Error::invalid(op, arg, format!("misaligned data: {e}")))
}

impl In<'_> {
    /// Element at a logical index (row-major over the view's shape), exactly, as f64.
    pub fn at(&self, index: &[usize]) -> f64 {
        let e: usize = index.iter().zip(&self.t.strides).map(|(i, s)| i * s).sum();
        self.t.dtype.read_f64(self.bytes, e)
    }

    /// The whole view in logical row-major order, exactly, as f64.
    pub fn to_f64(self) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.t.numel());
        for_each_index(&self.t.shape, |idx| out.push(self.at(idx)));
        out
    }

    pub fn dtype(&self) -> DType {
        self.t.dtype
    }

    /// The values as i32 (ids, lengths, offsets), in logical order.
    pub fn i32s(self) -> Vec<i32> {
        if self.t.dtype == DType::I32 && self.t.is_contiguous() {
            // The common case, read directly: same values as the f64 route below, whose
            // per-element decode and index bookkeeping cost more than the small ops reading ids.
            let bytes = &self.bytes[..self.t.numel() * 4];
            return bytes.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        }
        self.to_f64().into_iter().map(|v| v as i32).collect()
    }
}

impl Out<'_> {
    /// Write `values` (logical row-major order) rounding each once to the output dtype.
    pub fn write_f64(&mut self, values: &[f64]) {
        debug_assert_eq!(values.len(), self.t.numel());
        let (t, dtype) = (self.t, self.t.dtype);
        let mut i = 0;
        let bytes = &mut *self.bytes;
        for_each_index(&t.shape, |idx| {
            let e: usize = idx.iter().zip(&t.strides).map(|(i, s)| i * s).sum();
            dtype.write_f64(bytes, e, values[i]);
            i += 1;
        });
    }
}

/// Calls `f` with every index of `shape` in row-major order.
pub fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    if shape.contains(&0) {
        return;
    }
    let mut idx: SmallVec<[usize; 8]> = smallvec::smallvec![0; shape.len()];
    loop {
        f(&idx);
        let mut d = shape.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::CpuBuffer;
    use dsv3_core::DeviceId;
    use std::sync::Arc;

    /// `i32s` reads a contiguous i32 view directly and any other view through the f64 route: both give
    /// the view's values in logical order (negative ones too), never the elements outside the view.
    #[test]
    fn i32s_reads_the_view_in_logical_order() {
        let device = DeviceId { backend: "cpu", ordinal: 0, instance: 0 };
        let buffer: dsv3_core::Buffer = Arc::new(CpuBuffer::new(device, 4 * 12).expect("a small buffer"));
        let values: Vec<i32> = (0..12).map(|i| i * 1000 - 5000).collect();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = |offset: usize, shape: Vec<usize>, strides: Vec<usize>| Tensor {
            buffer: buffer.clone(),
            offset,
            shape,
            strides,
            dtype: DType::I32,
        };
        // Elements 2..8 as [2, 3]: contiguous.
        let rows = view(8, vec![2, 3], vec![3, 1]);
        assert!(rows.is_contiguous());
        assert_eq!(In { t: &rows, bytes: &bytes[8..] }.i32s(), values[2..8].to_vec());
        // Every third element from 1, four of them: strided.
        let column = view(4, vec![4], vec![3]);
        assert!(!column.is_contiguous());
        assert_eq!(
            In { t: &column, bytes: &bytes[4..] }.i32s(),
            vec![values[1], values[4], values[7], values[10]]
        );
    }
}
