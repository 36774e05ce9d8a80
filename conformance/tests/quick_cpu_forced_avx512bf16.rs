//! The quick set's GEMM cases on the AVX512-BF16 (`vdpbf16ps`) prefill path, forced (see `forced/mod.rs`).

mod forced;

#[test]
fn gemm_cases_pass_on_the_avx512bf16_path() {
    forced::gemm_cases_pass_on_forced_path("gemm_cases_pass_on_the_avx512bf16_path", "avx512bf16");
}
