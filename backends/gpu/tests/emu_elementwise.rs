//! add, silu_mul and cast on the host emulator against the CPU oracle.

mod common;

#[test]
fn add() {
    common::check_quick("add");
}

#[test]
fn silu_mul() {
    common::check_quick("silu_mul");
}

#[test]
fn cast() {
    common::check_quick("cast");
}
