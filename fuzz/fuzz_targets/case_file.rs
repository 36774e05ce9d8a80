#![no_main]
// The entry point is shared with the stable replay test (conformance/tests/fuzz_replay.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| dsv3_conformance::fuzzing::case_file(data));
