//! `dsv3 bench --op`: time one op on one backend — ms, GFLOP/s, GB/s and % of the device's measured peak.
//! GEMMs take any shape; other ops are timed on the full conformance set's cases for that op (the
//! DeepSeek-V3 shapes among them).

use crate::cli::{Checked, OP, TEXT};
use crate::out::outln;
use crate::registry;
use dsv3_conformance::case::Operand;
use dsv3_conformance::gen::ScaleStore;
use dsv3_conformance::{cases, runner, Case, Mode, Row};
use dsv3_core::{DType, Fp8Format};

/// The options of `dsv3 bench --op` (the command's help is `super::Args`'). Flattened into a struct also
/// named `Args`, so its argument group needs a name of its own.
#[derive(clap::Args)]
#[group(id = "bench-op")]
pub struct Args {
    /// The op to time, by its conformance name (gemm, mla_attention, moe_route, …)
    #[arg(long, value_parser = OP, required = true)]
    op: Option<String>,
    /// The backend to time on
    #[arg(long, default_value = "cpu", value_parser = TEXT)]
    backend: String,
    /// For gemm: f32, bf16, fp8 (bf16 activations, block-FP8 weights), w8a8 (FP8 activations and
    /// weights), or A/B/C with A and B each f32, bf16, fp8 or fp8-ue8m0 and C f32 or bf16 [default: f32]
    #[arg(long, value_name = "D", value_parser = GEMM_DTYPE)]
    dtype: Option<Spelled<(Operand, Operand, DType)>>,
    /// For gemm: C[M,N] = A[M,K]·B[N,K]ᵀ
    #[arg(long, value_name = "MxNxK", value_parser = SHAPE)]
    shape: Option<Spelled<(usize, usize, usize)>>,
    /// For gemm on cuda: `ours` (dsv3's kernels) or `cublaslt` (cuBLASLt, an error where it cannot run
    /// the GEMM); both set DSV3_CUDA_GEMM. Without it cuBLASLt runs what it can
    #[arg(long = "impl", value_name = "IMPL", value_parser = ["ours", "cublaslt"])]
    gemm_impl: Option<String>,
    /// The last stdout line is {"op","backend","dtype","shape","impl","ms","gflops","gbps",...}
    #[arg(long)]
    json: bool,
    /// Time spent measuring each case, in (0, 3600]
    #[arg(long, default_value = "1", value_parser = SECONDS, allow_negative_numbers = true)]
    seconds: f64,
}

/// A value as the user wrote it (the JSON line repeats it) and what it means.
#[derive(Clone)]
struct Spelled<T> {
    text: String,
    value: T,
}

const SHAPE: Checked<Spelled<(usize, usize, usize)>> =
    Checked(|s| Ok(Spelled { text: s.to_string(), value: dsv3_model::values::parse_shape(s)? }));

const GEMM_DTYPE: Checked<Spelled<(Operand, Operand, DType)>> =
    Checked(|s| Ok(Spelled { text: s.to_string(), value: parse_gemm_dtype(s)? }));

/// NaN and negative times were taken as "no time"; an hour is far beyond any useful measurement.
const SECONDS: Checked<f64> = Checked(|s| match s.parse::<f64>() {
    Ok(seconds) if seconds > 0.0 && seconds <= 3600.0 => Ok(seconds),
    _ => Err(format!("--seconds {s}: must be in (0, 3600]")),
});

pub fn run(args: Args) -> i32 {
    crate::finish("bench", try_run(args))
}

fn try_run(args: Args) -> Result<i32, String> {
    // clap requires --op unless a subcommand (`bench model`, `bench compare`) was given instead.
    let op = args.op.as_deref().ok_or("--op is required")?;
    if let Some(choice) = &args.gemm_impl {
        pick_cuda_gemm(op, &args.backend, choice)?;
    }
    let backends = registry::select(&args.backend)?;
    registry::require_present(&args.backend, &backends)?;
    let set: Vec<Case> = match op {
        "gemm" => {
            let shape = args.shape.as_ref().ok_or("gemm needs --shape MxNxK")?;
            let dtypes = args.dtype.as_ref().map_or_else(|| parse_gemm_dtype("f32"), |d| Ok(d.value))?;
            check_gemm_fits(&shape.text, shape.value, dtypes, &backends)?;
            let ((m, n, k), (a, b, c)) = (shape.value, dtypes);
            vec![cases::gemm(m, n, k, a, b, c)]
        }
        _ => {
            if args.shape.is_some() || args.dtype.is_some() {
                return Err(format!("--shape/--dtype apply to gemm; {op} is timed on its conformance cases"));
            }
            cases::full().into_iter().filter(|c| c.op == op).collect()
        }
    };
    let options =
        runner::Options { mode: Mode::Perf, perf_seconds: args.seconds, ..runner::Options::default() };
    let refs: Vec<&dyn dsv3_core::Backend> = backends.iter().map(|b| b.as_ref()).collect();
    let report = runner::run(&refs, &set, &options);
    for row in &report.results {
        print_row(row)?;
    }
    if let (Some(choice), Some(row)) = (&args.gemm_impl, report.results.iter().find(|r| r.perf.is_none())) {
        return Err(format!(
            "--impl {choice}: {} on {}: {} {}",
            row.case,
            row.device,
            row.status.as_str(),
            row.reason
        ));
    }
    if args.json {
        // The last line of stdout is one JSON object per the documented interface.
        if let Some(row) = report.results.last() {
            let shape = args.shape.as_ref().map(|s| s.text.as_str());
            let dtype = args.dtype.as_ref().map(|d| d.text.as_str());
            outln!("{}", json_line(row, shape, dtype, args.gemm_impl.as_deref()))?;
        }
    }
    Ok(if report.failed() { 1 } else { 0 })
}

fn print_row(row: &Row) -> Result<(), String> {
    match &row.perf {
        Some(p) => outln!(
            "{} {} {} [{}]: {:.3} ms, {:.1} GFLOP/s, {:.2} GB/s, {} ({} iterations over {} operand copies)",
            row.backend,
            row.op,
            row.case,
            row.dtype,
            p.ms,
            p.gflops,
            p.gbps,
            match (p.pct_of_peak, &p.bound) {
                (Some(pct), Some(bound)) => format!("{pct:.1}% of peak ({bound} bound)"),
                _ => "peak unknown".into(),
            },
            p.iterations,
            p.copies
        ),
        None => outln!("{} {} {}: {} {}", row.backend, row.op, row.case, row.status.as_str(), row.reason),
    }
    .map_err(String::from)
}

/// `--impl`: only for gemm on the CUDA backend; sets `DSV3_CUDA_GEMM` before any device opens, and for
/// `cublaslt` fails at once, with the reason, where the library cannot be loaded.
fn pick_cuda_gemm(op: &str, backend: &str, choice: &str) -> Result<(), String> {
    use dsv3_backend_cuda::cublaslt;
    if op != "gemm" || backend != "cuda" {
        return Err(format!("--impl picks the CUDA backend's GEMM: it needs --op gemm --backend cuda, not --op {op} --backend {backend}"));
    }
    if choice == "cublaslt" {
        cublaslt::load().map_err(|why| format!("--impl cublaslt: cuBLASLt is unavailable: {why}"))?;
    }
    // Before any thread is started or device opened: the backend reads it when a device opens.
    std::env::set_var(cublaslt::IMPL_ENV, choice);
    Ok(())
}

fn json_line(row: &Row, shape: Option<&str>, dtype: Option<&str>, gemm_impl: Option<&str>) -> String {
    let p = row.perf.as_ref();
    serde_json::json!({
        "op": row.op,
        "backend": row.backend,
        "device": row.device,
        "dtype": dtype.unwrap_or(&row.dtype),
        "shape": shape.unwrap_or(&row.case),
        "impl": gemm_impl,
        "status": row.status.as_str(),
        "ms": p.map(|p| p.ms),
        "gflops": p.map(|p| p.gflops),
        "gbps": p.map(|p| p.gbps),
        "copies": p.map(|p| p.copies),
        "pct_of_peak": p.and_then(|p| p.pct_of_peak),
        "bound": p.and_then(|p| p.bound.clone()),
    })
    .to_string()
}

/// Refuses a GEMM whose A, B and C (as stored; scale grids aside) exceed the memory of a device the bench
/// will use, or the host's, which generates them, before anything is allocated. The size is computed in
/// f64, so no shape overflows.
fn check_gemm_fits(
    shape: &str,
    (m, n, k): (usize, usize, usize),
    (a, b, c): (Operand, Operand, DType),
    backends: &[Box<dyn dsv3_core::Backend>],
) -> Result<(), String> {
    let size = |o: Operand| match o {
        Operand::Dense(d) => d.size() as f64,
        Operand::Fp8(..) => 1.0,
    };
    let (m, n, k) = (m as f64, n as f64, k as f64);
    let bytes = m * k * size(a) + n * k * size(b) + m * n * c.size() as f64;
    let host = registry::backends().into_iter().filter(|b| b.name() == "cpu").collect::<Vec<_>>();
    for backend in backends.iter().chain(&host) {
        let Some(device) = backend.devices().ok().and_then(|d| d.into_iter().next()) else { continue };
        // A device that does not report its memory is still held to what one allocation can address.
        let have = match device.memory_bytes {
            0 => isize::MAX as f64,
            m => m as f64,
        };
        if bytes > have {
            return Err(format!(
                "--shape {shape}: A, B and C need {:.3e} bytes, more than {}:{} ({}) has ({:.3e} bytes)",
                bytes, device.backend, device.ordinal, device.name, have
            ));
        }
    }
    Ok(())
}

/// `f32`, `bf16`, `fp8` (bf16 activations, block-FP8 weights, bf16 out), `w8a8` (FP8 activations and
/// weights, bf16 out), or explicit `A/B/C` with operands f32, bf16, fp8, fp8-ue8m0.
fn parse_gemm_dtype(s: &str) -> Result<(Operand, Operand, DType), String> {
    let fp8 = Operand::Fp8(Fp8Format::E4M3Fn, ScaleStore::F32);
    let operand = |name: &str| -> Result<Operand, String> {
        match name {
            "f32" => Ok(Operand::Dense(DType::F32)),
            "bf16" => Ok(Operand::Dense(DType::BF16)),
            "fp8" => Ok(fp8),
            "fp8-ue8m0" => Ok(Operand::Fp8(Fp8Format::E4M3Fn, ScaleStore::Ue8m0)),
            _ => Err(format!("--dtype: unknown operand `{name}` (f32, bf16, fp8, fp8-ue8m0)")),
        }
    };
    Ok(match s {
        "f32" => (Operand::Dense(DType::F32), Operand::Dense(DType::F32), DType::F32),
        "bf16" => (Operand::Dense(DType::BF16), Operand::Dense(DType::BF16), DType::BF16),
        "fp8" => (Operand::Dense(DType::BF16), fp8, DType::BF16),
        "w8a8" => (fp8, fp8, DType::BF16),
        _ => match s.split('/').collect::<Vec<_>>()[..] {
            [a, b, c] => {
                let c = DType::parse(c).filter(|d| matches!(d, DType::F32 | DType::BF16));
                (operand(a)?, operand(b)?, c.ok_or_else(|| format!("--dtype {s}: C must be f32 or bf16"))?)
            }
            _ => return Err(format!("--dtype {s}: expected f32, bf16, fp8, w8a8 or A/B/C")),
        },
    })
}
