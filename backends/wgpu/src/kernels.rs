//! WGSL kernels: sources embedded from `kernels/wgsl/`, assembled per variant (the element types of the
//! arguments and a few constants), compiled at first use and cached per device.
//!
//! A variant is `common.wgsl` + generated bindings and typed accessors + the kernel's file. Every argument
//! is a `read_write` storage buffer of u32 words: one buffer may then back several arguments of a dispatch
//! (inputs and outputs at disjoint ranges, which `Op::validate` guarantees), which wgpu forbids between a
//! read-only and a read-write binding. Outputs narrower than a word are written with `atomicAnd` then
//! `atomicOr` on their own bits, so neighbouring elements (another thread's, another argument's, a guard
//! byte) are never disturbed, whatever the byte offset of the view.

use dsv3_core::{DType, Error, Fp8Format, Result};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

pub const COMMON: &str = include_str!("../../../kernels/wgsl/common.wgsl");

/// The kernel files.
pub mod src {
    pub const COPY_BYTES: &str = include_str!("../../../kernels/wgsl/copy_bytes.wgsl");
    pub const ELEMENTWISE: &str = include_str!("../../../kernels/wgsl/elementwise.wgsl");
    pub const ROWS: &str = include_str!("../../../kernels/wgsl/rows.wgsl");
    pub const ROPE: &str = include_str!("../../../kernels/wgsl/rope.wgsl");
    pub const EMBEDDING: &str = include_str!("../../../kernels/wgsl/embedding.wgsl");
    pub const CACHE_APPEND: &str = include_str!("../../../kernels/wgsl/cache_append.wgsl");
    pub const GEMM_COMMON: &str = include_str!("../../../kernels/wgsl/gemm_common.wgsl");
    pub const GEMM: &str = include_str!("../../../kernels/wgsl/gemm.wgsl");
    pub const GEMM_DECODE: &str = include_str!("../../../kernels/wgsl/gemm_decode.wgsl");
    pub const GEMM_DECODE_SUBGROUP: &str = include_str!("../../../kernels/wgsl/gemm_decode_subgroup.wgsl");
    pub const ACT_QUANT: &str = include_str!("../../../kernels/wgsl/act_quant.wgsl");
    pub const DEQUANTIZE: &str = include_str!("../../../kernels/wgsl/dequantize.wgsl");
    pub const MOE_ROUTE: &str = include_str!("../../../kernels/wgsl/moe_route.wgsl");
    pub const MOE_INDEX: &str = include_str!("../../../kernels/wgsl/moe_index.wgsl");
    pub const MOE_GATHER: &str = include_str!("../../../kernels/wgsl/moe_gather.wgsl");
    pub const MOE_COMBINE: &str = include_str!("../../../kernels/wgsl/moe_combine.wgsl");
    pub const ATTENTION: &str = include_str!("../../../kernels/wgsl/attention.wgsl");
    pub const ATTENTION_COMBINE: &str = include_str!("../../../kernels/wgsl/attention_combine.wgsl");
    pub const SELECT: &str = include_str!("../../../kernels/wgsl/select.wgsl");
    pub const SAMPLE: &str = include_str!("../../../kernels/wgsl/sample.wgsl");
    pub const PEAK: &str = include_str!("../../../kernels/wgsl/peak.wgsl");
}

/// How an argument's elements are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Elem {
    F32,
    F16,
    Bf16,
    /// FP8 with common.wgsl's kind code (0 e4m3fn, 1 e4m3fnuz, 2 e5m2).
    Fp8(u32),
    Ue8m0,
    I32,
    U8,
    /// Raw 32-bit words (scratch, byte copies).
    Word,
}

impl Elem {
    pub fn of(d: DType) -> Elem {
        match d {
            DType::F32 => Elem::F32,
            DType::F16 => Elem::F16,
            DType::BF16 => Elem::Bf16,
            DType::F8E4M3Fn => Elem::Fp8(0),
            DType::F8E4M3Fnuz => Elem::Fp8(1),
            DType::F8E5M2 => Elem::Fp8(2),
            DType::Ue8m0 => Elem::Ue8m0,
            DType::I32 => Elem::I32,
            // i64 is in no op's signature; u8 is moved as bytes.
            DType::I64 | DType::U8 => Elem::U8,
        }
    }

    pub fn fp8_kind(f: Fp8Format) -> u32 {
        match f {
            Fp8Format::E4M3Fn => 0,
            Fp8Format::E4M3Fnuz => 1,
            Fp8Format::E5M2 => 2,
        }
    }

    pub fn size(self) -> u32 {
        match self {
            Elem::F32 | Elem::I32 | Elem::Word => 4,
            Elem::F16 | Elem::Bf16 => 2,
            Elem::Fp8(_) | Elem::Ue8m0 | Elem::U8 => 1,
        }
    }

    fn tag(self) -> String {
        match self {
            Elem::F32 => "f32".into(),
            Elem::F16 => "f16".into(),
            Elem::Bf16 => "bf16".into(),
            Elem::Fp8(k) => format!("fp8k{k}"),
            Elem::Ue8m0 => "ue8m0".into(),
            Elem::I32 => "i32".into(),
            Elem::U8 => "u8".into(),
            Elem::Word => "word".into(),
        }
    }

    /// WGSL turning raw bits `r` into f32.
    fn decode(self, r: &str) -> String {
        match self {
            Elem::F32 | Elem::Word => format!("bitcast<f32>({r})"),
            Elem::F16 => format!("dec_f16({r})"),
            Elem::Bf16 => format!("dec_bf16({r})"),
            Elem::Fp8(k) => format!("dec_fp8({r}, {k}u)"),
            Elem::Ue8m0 => format!("dec_ue8m0({r})"),
            Elem::I32 => format!("f32(bitcast<i32>({r}))"),
            Elem::U8 => format!("f32({r})"),
        }
    }

    /// WGSL turning f32 `v` into raw bits (rounded to nearest even; FP8 saturating).
    fn encode(self, v: &str) -> String {
        match self {
            Elem::F32 | Elem::Word => format!("bitcast<u32>({v})"),
            Elem::F16 => format!("enc_f16({v})"),
            Elem::Bf16 => format!("enc_bf16({v})"),
            Elem::Fp8(k) => format!("enc_fp8({v}, {k}u)"),
            Elem::Ue8m0 => format!("enc_ue8m0_ceil({v})"),
            Elem::I32 => format!("bitcast<u32>(i32({v}))"),
            Elem::U8 => format!("u32({v})"),
        }
    }
}

/// One argument of a kernel: its WGSL name, element type, and whether the kernel writes it.
#[derive(Clone, Copy, Debug)]
pub struct Arg {
    pub name: &'static str,
    pub elem: Elem,
    pub write: bool,
}

pub fn input(name: &'static str, elem: Elem) -> Arg {
    Arg { name, elem, write: false }
}

pub fn output(name: &'static str, elem: Elem) -> Arg {
    Arg { name, elem, write: true }
}

/// A kernel variant to build.
pub struct Spec<'a> {
    pub name: &'static str,
    /// Kernel files, concatenated after the generated part (shared helpers first).
    pub sources: &'a [&'static str],
    pub args: &'a [Arg],
    /// `const NAME: u32 = VALUE;` lines (workgroup sizes, switches).
    pub consts: &'a [(&'static str, u32)],
}

impl Spec<'_> {
    pub fn key(&self) -> String {
        let mut k = self.name.to_string();
        for a in self.args {
            let _ = write!(k, "|{}:{}{}", a.name, a.elem.tag(), if a.write { "w" } else { "" });
        }
        for (n, v) in self.consts {
            let _ = write!(k, "|{n}={v}");
        }
        k
    }

    /// The whole WGSL module.
    pub fn assemble(&self) -> String {
        let mut s =
            String::with_capacity(COMMON.len() + self.sources.iter().map(|x| x.len()).sum::<usize>() + 4096);
        s.push_str("// dsv3 kernel variant ");
        s.push_str(&self.key());
        s.push('\n');
        s.push_str("@group(0) @binding(0) var<storage, read> P: array<u32>;\n");
        s.push_str("@group(0) @binding(1) var<storage, read_write> ERR: array<atomic<u32>>;\n");
        for (i, a) in self.args.iter().enumerate() {
            let atomic = a.write && a.elem.size() < 4;
            let ty = if atomic { "array<atomic<u32>>" } else { "array<u32>" };
            let _ = writeln!(s, "@group(0) @binding({}) var<storage, read_write> {}: {ty};", i + 2, a.name);
        }
        for (n, v) in self.consts {
            let _ = writeln!(s, "const {n}: u32 = {v}u;");
        }
        for a in self.args {
            accessors(&mut s, a);
        }
        s.push_str(COMMON);
        for source in self.sources {
            s.push('\n');
            s.push_str(source);
        }
        s
    }
}

/// `raw_N(i)`, `ld_N(i)`, `ldi_N(i)` for inputs; `stw_N(i, bits)`, `st_N(i, v)`, `sti_N(i, v)` for outputs.
fn accessors(s: &mut String, a: &Arg) {
    let n = a.name;
    let size = a.elem.size();
    if !a.write {
        let raw = match size {
            4 => format!("{n}[i]"),
            2 => format!("({n}[i >> 1u] >> ((i & 1u) * 16u)) & 0xffffu"),
            _ => format!("({n}[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu"),
        };
        let _ = writeln!(s, "fn raw_{n}(i: u32) -> u32 {{ return {raw}; }}");
        let _ =
            writeln!(s, "fn ld_{n}(i: u32) -> f32 {{ return {}; }}", a.elem.decode(&format!("raw_{n}(i)")));
        let _ = writeln!(s, "fn ldi_{n}(i: u32) -> i32 {{ return bitcast<i32>(raw_{n}(i)); }}");
        return;
    }
    match size {
        4 => {
            let _ = writeln!(s, "fn stw_{n}(i: u32, bits: u32) {{ {n}[i] = bits; }}");
        }
        2 | 1 => {
            let (shift, mask) =
                if size == 2 { ("(i & 1u) * 16u", "0xffffu") } else { ("(i & 3u) * 8u", "0xffu") };
            let word = if size == 2 { "i >> 1u" } else { "i >> 2u" };
            let _ = writeln!(
                s,
                "fn stw_{n}(i: u32, bits: u32) {{ let w = {word}; let sh = {shift}; \
                 atomicAnd(&{n}[w], ~({mask} << sh)); atomicOr(&{n}[w], (bits & {mask}) << sh); }}"
            );
        }
        _ => unreachable!(),
    }
    let _ = writeln!(s, "fn st_{n}(i: u32, v: f32) {{ stw_{n}(i, {}); }}", a.elem.encode("v"));
    let _ = writeln!(s, "fn sti_{n}(i: u32, v: i32) {{ stw_{n}(i, bitcast<u32>(v)); }}");
}

/// A compiled variant.
pub struct Kernel {
    pub name: &'static str,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    /// Argument bindings (after the parameters and the error word).
    pub args: usize,
}

/// Compiled kernels of one device, by variant key.
#[derive(Default)]
pub struct Cache {
    kernels: Mutex<HashMap<String, Arc<Kernel>>>,
}

impl Cache {
    /// The kernel for `spec`, compiled on first use. Compilation errors name the kernel and carry naga's
    /// message (a bug in a kernel source, never a user error).
    pub fn get(&self, device: &wgpu::Device, op: &'static str, spec: &Spec) -> Result<Arc<Kernel>> {
        let key = spec.key();
        if let Some(k) = self.kernels.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(k.clone());
        }
        let kernel = Arc::new(compile(device, op, spec)?);
        self.kernels.lock().unwrap_or_else(|p| p.into_inner()).insert(key, kernel.clone());
        Ok(kernel)
    }
}

fn compile(device: &wgpu::Device, op: &'static str, spec: &Spec) -> Result<Kernel> {
    let source = spec.assemble();
    let storage = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    };
    let mut entries = vec![storage(0, true), storage(1, false)];
    entries.extend((0..spec.args.len()).map(|i| storage(i as u32 + 2, false)));
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(spec.name),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(spec.name),
        entries: &entries,
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(spec.name),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(spec.name),
        layout: Some(&pipeline_layout),
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Err(Error::Kernel {
            backend: "wgpu".into(),
            op,
            kernel: spec.key(),
            reason: format!("compilation failed: {e}"),
        });
    }
    Ok(Kernel { name: spec.name, pipeline, layout, args: spec.args.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(spec: &Spec) {
        let source = spec.assemble();
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{}: {}", spec.key(), e.emit_to_string(&source)));
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}: {}", spec.key(), e.emit_to_string(&source)));
    }

    /// Every kernel file, with the element types and switches the ops choose (one or two variants each),
    /// parsed and validated by naga: no device needed.
    #[test]
    fn every_kernel_compiles() {
        let (f32_, bf16, fp8, i32_) = (Elem::F32, Elem::Bf16, Elem::Fp8(0), Elem::I32);
        let gemm_args = |a: Elem, b: Elem, c: Elem| {
            [
                input("a", a),
                input("asc", f32_),
                input("b", b),
                input("bsc", Elem::Ue8m0),
                input("offs", i32_),
                output("c", c),
            ]
        };
        let g1 = gemm_args(bf16, fp8, bf16);
        let g2 = gemm_args(fp8, Elem::Fp8(2), f32_);
        let flags = |a, b, g| [("A_FP8", a), ("B_FP8", b), ("GROUPED", g)];
        let (fl1, fl2) = (flags(0, 1, 0), flags(1, 1, 1));
        let tiled =
            |f: [(&'static str, u32); 3]| [f[0], f[1], f[2], ("TX", 16), ("TY", 16), ("TM", 4), ("TN", 4)];
        let decode =
            |f: [(&'static str, u32); 3]| [f[0], f[1], f[2], ("COLS", 8), ("LANES", 32), ("MAXM", 8)];
        let decode_sg =
            |f: [(&'static str, u32); 3]| [f[0], f[1], f[2], ("COLS", 64), ("WG", 64), ("MAXM", 1)];
        let (t1, t2, d1, d2, s1, s2) =
            (tiled(fl1), tiled(fl2), decode(fl1), decode(fl2), decode_sg(fl1), decode_sg(fl2));
        type Variant = (&'static str, Vec<&'static str>, Vec<Arg>, Vec<(&'static str, u32)>);
        let specs: Vec<Variant> = vec![
            (
                "copy_bytes",
                vec![src::COPY_BYTES],
                vec![input("src", Elem::Word), output("dst", Elem::Word)],
                vec![("WG", 256)],
            ),
            (
                "elementwise",
                vec![src::ELEMENTWISE],
                vec![input("a", bf16), input("b", f32_), output("out", Elem::F16)],
                vec![("WG", 256), ("OPK", 1)],
            ),
            (
                "elementwise",
                vec![src::ELEMENTWISE],
                vec![input("a", Elem::Fp8(1)), input("b", Elem::Fp8(1)), output("out", Elem::Fp8(2))],
                vec![("WG", 256), ("OPK", 2)],
            ),
            (
                "rows",
                vec![src::ROWS],
                vec![input("x", bf16), input("w", f32_), output("out", bf16)],
                vec![("WG", 256), ("OPK", 0)],
            ),
            (
                "rows",
                vec![src::ROWS],
                vec![input("x", f32_), input("w", f32_), output("out", f32_)],
                vec![("WG", 256), ("OPK", 1)],
            ),
            (
                "rope",
                vec![src::ROPE],
                vec![input("x", bf16), input("pos", i32_), output("out", f32_)],
                vec![("WG", 256)],
            ),
            (
                "embedding",
                vec![src::EMBEDDING],
                vec![input("table", bf16), input("ids", i32_), output("out", bf16)],
                vec![("WG", 256)],
            ),
            (
                "cache_append",
                vec![src::CACHE_APPEND],
                vec![input("rows", bf16), input("lens", i32_), input("table", i32_), output("cache", bf16)],
                vec![("WG", 256)],
            ),
            ("gemm", vec![src::GEMM_COMMON, src::GEMM], g1.to_vec(), t1.to_vec()),
            ("gemm", vec![src::GEMM_COMMON, src::GEMM], g2.to_vec(), t2.to_vec()),
            ("gemm_decode", vec![src::GEMM_COMMON, src::GEMM_DECODE], g1.to_vec(), d1.to_vec()),
            ("gemm_decode", vec![src::GEMM_COMMON, src::GEMM_DECODE], g2.to_vec(), d2.to_vec()),
            (
                "gemm_decode_subgroup",
                vec![src::GEMM_COMMON, src::GEMM_DECODE_SUBGROUP],
                g1.to_vec(),
                s1.to_vec(),
            ),
            (
                "gemm_decode_subgroup",
                vec![src::GEMM_COMMON, src::GEMM_DECODE_SUBGROUP],
                g2.to_vec(),
                s2.to_vec(),
            ),
            (
                "act_quant",
                vec![src::ACT_QUANT],
                vec![input("x", bf16), output("codes", fp8), output("scales", Elem::Ue8m0)],
                vec![("KIND", 0), ("UE8M0", 1)],
            ),
            (
                "dequantize",
                vec![src::DEQUANTIZE],
                vec![input("codes", fp8), input("scales", f32_), output("out", bf16)],
                vec![("WG", 256)],
            ),
            (
                "moe_route",
                vec![src::MOE_ROUTE],
                vec![
                    input("logits", f32_),
                    input("bias", f32_),
                    output("ids", i32_),
                    output("weights", f32_),
                ],
                vec![("WG", 256)],
            ),
            (
                "moe_index",
                vec![src::MOE_INDEX],
                vec![input("ids", i32_), output("offsets", i32_), output("slot_rows", i32_)],
                vec![("WG", 256)],
            ),
            (
                "moe_gather",
                vec![src::MOE_GATHER],
                vec![input("x", bf16), input("slot_rows", i32_), output("rows", bf16)],
                vec![("WG", 256)],
            ),
            (
                "moe_combine",
                vec![src::MOE_COMBINE],
                vec![
                    input("eo", bf16),
                    input("slot_rows", i32_),
                    input("weights", f32_),
                    output("out", bf16),
                    output("part", f32_),
                ],
                vec![("WG", 256)],
            ),
            (
                "attention",
                vec![src::ATTENTION],
                vec![
                    input("q1", bf16),
                    input("q2", f32_),
                    input("k1", bf16),
                    input("k2", bf16),
                    input("vv", bf16),
                    input("lens", i32_),
                    input("table", i32_),
                    output("part", f32_),
                ],
                vec![("WG", 128), ("OPT", 4)],
            ),
            (
                "attention_combine",
                vec![src::ATTENTION_COMBINE],
                vec![input("part", f32_), output("out", bf16)],
                vec![("WG", 256)],
            ),
            (
                "select",
                vec![src::SELECT],
                vec![input("x", bf16), output("values", f32_), output("ids", i32_)],
                vec![("WG", 256), ("OPK", 1)],
            ),
            (
                "sample",
                vec![src::SAMPLE],
                vec![input("x", bf16), input("rows", i32_), output("out", i32_)],
                vec![("WG", 256)],
            ),
            (
                "peak",
                vec![src::PEAK],
                vec![input("buf", Elem::Word), output("sink", Elem::Word)],
                vec![("OPK", 0)],
            ),
        ];
        for (name, sources, args, consts) in &specs {
            validate(&Spec { name, sources, args, consts });
        }
    }

    #[test]
    fn narrow_outputs_are_written_with_atomics_and_keys_name_the_variant() {
        let args = [input("x", Elem::F32), output("out", Elem::Bf16), output("ids", Elem::I32)];
        let spec = Spec { name: "k", sources: &[], args: &args, consts: &[("WG", 64)] };
        let s = spec.assemble();
        assert!(s.contains("var<storage, read_write> out: array<atomic<u32>>;"), "{s}");
        assert!(s.contains("var<storage, read_write> ids: array<u32>;"), "{s}");
        assert!(s.contains("atomicAnd(&out[w]"), "{s}");
        assert_eq!(spec.key(), "k|x:f32|out:bf16w|ids:i32w|WG=64");
    }
}
