//! Parsers for the values of command-line flags that take structured text (`--shape`, `--tokens`). They
//! live here, not in the binary, so the fuzz targets and their replay test call exactly what the CLI calls.

/// `--shape MxNxK` for `bench`: three dimensions, each at least 1 (an empty product has no time to measure:
/// its GFLOP/s and % of peak would be noise). Errors name the flag and the text.
pub fn parse_shape(s: &str) -> Result<(usize, usize, usize), String> {
    let dims: Vec<usize> =
        s.split('x').map(|d| d.trim().parse()).collect::<Result<_, _>>().map_err(|_| bad_shape(s))?;
    match dims[..] {
        [m, n, k] if m == 0 || n == 0 || k == 0 => {
            Err(format!("--shape {s}: every dimension must be at least 1"))
        }
        [m, n, k] => Ok((m, n, k)),
        _ => Err(bad_shape(s)),
    }
}

fn bad_shape(s: &str) -> String {
    format!("--shape {s}: expected MxNxK, e.g. 512x2048x7168 (C[M,N] = A[M,K]·B[N,K]ᵀ)")
}

/// `--tokens 1,2,3`: comma-separated token ids. Whether each id is in the model's vocabulary is checked
/// later, against the model.
pub fn parse_tokens(s: &str) -> Result<Vec<u32>, String> {
    s.split(',')
        .map(|t| t.trim().parse::<u32>().map_err(|_| format!("--tokens: `{t}` is not a token id")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(parse_shape("2x3x4"), Ok((2, 3, 4)));
        assert_eq!(parse_shape(" 2 x3x 4"), Ok((2, 3, 4)));
        assert!(parse_shape("0x3x4").unwrap_err().contains("at least 1"));
        assert!(parse_shape("2x3").unwrap_err().contains("expected MxNxK"));
        assert!(parse_shape("99999999999999999999999x1x1").unwrap_err().contains("expected MxNxK"));
    }

    #[test]
    fn tokens() {
        assert_eq!(parse_tokens("1, 2,3"), Ok(vec![1, 2, 3]));
        assert!(parse_tokens("1,,2").unwrap_err().contains("``"));
        assert!(parse_tokens("4294967296").unwrap_err().contains("not a token id"));
    }
}
