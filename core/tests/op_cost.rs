//! `Op::cost`: the work figures behind GFLOP/s and GB/s in perf reports.

use dsv3_core::ops::{Add, Embedding};
use dsv3_core::{Buffer, DType, DeviceBuffer, DeviceId, Op, Tensor};
use std::any::Any;
use std::sync::Arc;

/// Memory that is never touched: cost only reads shapes and dtypes.
#[derive(Debug)]
struct Shapeless(usize, DeviceId);

impl DeviceBuffer for Shapeless {
    fn len(&self) -> usize {
        self.0
    }
    fn device_id(&self) -> DeviceId {
        self.1
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

fn tensor(shape: &[usize], dtype: DType) -> Tensor {
    let bytes = shape.iter().product::<usize>() * dtype.size();
    let b: Buffer = Arc::new(Shapeless(bytes, DeviceId::new("test", 0)));
    Tensor::contiguous(b, 0, shape, dtype)
}

#[test]
fn an_embedding_lookup_moves_the_rows_it_gathers_not_the_table() {
    let (v, d, t) = (129_280, 7168, 64);
    let op = Op::Embedding(Embedding {
        table: tensor(&[v, d], DType::BF16),
        ids: tensor(&[t], DType::I32),
        out: tensor(&[t, d], DType::BF16),
    });
    // T rows read (bf16), T ids, T rows written.
    assert_eq!(op.cost().bytes, (t * d * 2 + t * 4 + t * d * 2) as f64);
}

#[test]
fn element_wise_ops_move_every_operand_once() {
    let op = Op::Add(Add {
        a: tensor(&[3, 5], DType::F32),
        b: tensor(&[3, 5], DType::BF16),
        out: tensor(&[3, 5], DType::F32),
    });
    assert_eq!(op.cost().bytes, (15 * 4 + 15 * 2 + 15 * 4) as f64);
    assert_eq!(op.cost().flops, 15.0);
}
