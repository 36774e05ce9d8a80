//! The quick set's GEMM cases on the AMX-BF16 tile prefill path, forced (see `forced/mod.rs`).

mod forced;

#[test]
fn gemm_cases_pass_on_the_amx_path() {
    forced::gemm_cases_pass_on_forced_path("gemm_cases_pass_on_the_amx_path", "amx");
}
