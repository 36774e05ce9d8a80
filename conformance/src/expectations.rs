//! Per-backend expectations, IREE-CTS style: an `unsupported` list (permanent: the backend will not run
//! these cases, with the reason) and an `expected_failures` list (temporary: known bugs, with the
//! reason). Entries are glob patterns (`*` matches any run of characters) over case names such as
//! `gemm(m=1,n=200,k=384,a=f8e4m3fn/ue8m0,b=*,c=bf16)`. In `verify_xfail` mode an expected failure that
//! passes is itself a failure, so stale entries cannot rot.
//!
//! A backend without entries here is expected to pass everything it says it supports.

use crate::case::Case;

#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub pattern: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Expectations {
    pub unsupported: &'static [Entry],
    pub expected_failures: &'static [Entry],
}

/// The registry, keyed by backend name. Add a backend's entries here when it lands; every entry needs a
/// reason a reader can act on (a driver limitation, an issue number).
pub fn for_backend(name: &str) -> Expectations {
    match name {
        // The CPU backend (both modes) implements the whole op set and is expected to pass all of it.
        "cpu" | "cpu-ref" => Expectations { unsupported: &[], expected_failures: &[] },
        // The wgpu backend (WGSL kernels; verified on Mesa's lavapipe) runs every op of the set within the
        // same tolerance table, with no derivation of its own: exp, ln, sin and cos are the kernels' own
        // few-ulp routines (WGSL's are only bounded as 3 + 2|x| ulp, or absolutely on [−π, π]); divisions
        // whose result must be exact (act_quant, sample's l / T) are correctly rounded in integer code; WGSL's
        // 2.5-ulp `/` elsewhere is within the roundings each bound already counts.
        "wgpu" => Expectations { unsupported: &[], expected_failures: &[] },
        _ => Expectations::default(),
    }
}

impl Expectations {
    pub fn unsupported_reason(&self, case: &Case) -> Option<&'static str> {
        find(self.unsupported, &case.name)
    }

    pub fn xfail_reason(&self, case: &Case) -> Option<&'static str> {
        find(self.expected_failures, &case.name)
    }
}

fn find(entries: &'static [Entry], name: &str) -> Option<&'static str> {
    entries.iter().find(|e| glob(e.pattern, name)).map(|e| e.reason)
}

/// `*` matches any (possibly empty) run of characters; everything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_matches_case_names() {
        assert!(glob("gemm(*)", "gemm(m=1,n=2)"));
        assert!(glob("*a=f8e4m3fnuz*", "gemm(m=1,a=f8e4m3fnuz/f32,c=bf16)"));
        assert!(!glob("gemm(*)", "grouped_gemm(m=1)"));
        assert!(glob("*", ""));
        assert!(!glob("a*b", "acbx"));
        assert!(glob("a*b*", "acbx"));
    }
}
