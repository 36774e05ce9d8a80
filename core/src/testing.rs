//! The rule for a test that cannot run on this machine (no Vulkan driver, no NVRTC or hiprtc, no AVX-512
//! VBMI, a real driver where a fake one must be loaded): it must never look like a pass.
//!
//! * Outside CI it returns after writing one line that starts with [`SKIP_MARKER`] straight to the
//!   process's stderr (the test harness captures `eprintln!` of passing tests, not direct writes), so
//!   `ci/test.sh` can count it next to its totals.
//! * Under `CI=true` (which `.ci/run` sets) the environment is complete by construction, so not running
//!   is a failure: it panics with the reason.
//! * Except for an instruction-set path this CPU lacks ([`cpu_lacks`]: AVX-512 VBMI, AVX512-BF16, AMX):
//!   nothing CI installs provides one, and CI machines differ (AVX-512 Intel, AVX2-only AMD EPYC), so it
//!   is never a failure; it writes a [`CPU_LACKS_MARKER`] line, which `ci/test.sh` counts and lists under
//!   its totals. Each such path runs wherever the CPU has it, forced where it is not the default.
//!
//! Tests that run a child test in a fresh process check for the child's own [`RAN_MARKER`] line (written
//! by [`child_ran`] as the child's last act), not only for libtest's "1 passed", which a child that
//! returned early would also print.

use std::io::Write;

/// Start of the line a test writes when it did not run.
pub const SKIP_MARKER: &str = "dsv3-test-skip:";
/// Start of the line a test writes when this CPU lacks the instruction set it tests.
pub const CPU_LACKS_MARKER: &str = "dsv3-test-cpu-lacks:";
/// Start of the line a child test writes when it ran to its end.
pub const RAN_MARKER: &str = "dsv3-child-ran:";

/// Whether this is a CI run (`CI=true`), where every test must run.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Reports that `test` did not run because of `reason`: a failure under `CI=true`, a counted, loud
/// line elsewhere. The caller returns afterwards.
pub fn not_run(test: &str, reason: &str) {
    assert!(!under_ci(), "{test} did not run: {reason} — CI=true requires it to run");
    let _ = writeln!(
        std::io::stderr(),
        "\n{SKIP_MARKER} {test}: {reason}\n**** this test did NOT run (it is not a pass) ****"
    );
}

/// Reports that `test` did not run because this CPU lacks the instruction-set extension it tests (`reason`
/// names it), under CI too (see the module comment): never a pass, counted and listed by `ci/test.sh`.
pub fn cpu_lacks(test: &str, reason: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "\n{CPU_LACKS_MARKER} {test}: {reason}\n**** this test did NOT run: this CPU lacks what it tests ****"
    );
}

/// Called by a child test as its last statement: the marker its parent looks for.
pub fn child_ran(name: &str) {
    println!("\n{RAN_MARKER} {name}");
}

/// Checks the output of child test `name` (whose process exited successfully): it ran to its end; or,
/// outside CI, it reported a skip, which is passed on as this process's own skip. Anything else fails.
pub fn check_child(name: &str, output: &str) {
    if output.lines().any(|l| l.trim_end() == format!("{RAN_MARKER} {name}")) {
        return;
    }
    if let Some((_, why)) = output.lines().find_map(|l| l.split_once(SKIP_MARKER)) {
        not_run(name, why.trim());
        return;
    }
    panic!("child test `{name}` exited successfully without its `{RAN_MARKER}` line:\n{output}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_counts_as_run_only_with_its_own_marker() {
        check_child("child_a", "running 1 test\ntest child_a ... \ndsv3-child-ran: child_a\nok\n");
        let returned_early = std::panic::catch_unwind(|| {
            check_child("child_a", "running 1 test\ntest child_a ... ok\ntest result: ok. 1 passed;")
        });
        assert!(returned_early.is_err(), "libtest's `1 passed` alone is not a run");
        let other = std::panic::catch_unwind(|| check_child("child_a", "\ndsv3-child-ran: child_b\n"));
        assert!(other.is_err(), "another child's marker is not this one's");
    }
}
