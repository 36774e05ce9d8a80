//! Reading the small files that describe a model (config, index, tokenizer), with a size bound: a path to
//! `/dev/zero` or a multi-gigabyte file given by mistake is an error, not a read that never ends.

use std::io::Read;
use std::path::Path;

use dsv3_core::{Error, Result};

/// `config.json` and `model.safetensors.index.json`: a few kB to a few MB in every release.
pub const CONFIG_LIMIT: u64 = 64 << 20;
/// `tokenizer.json`: DeepSeek-V3's is 7.8 MB; the largest vocabularies stay well under this.
pub const TOKENIZER_LIMIT: u64 = 512 << 20;

/// The bytes of `path`, or an error naming it when it holds more than `limit` bytes.
pub fn read_capped(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let io = |source| Error::Io { context: format!("reading {}", path.display()), source };
    let mut bytes = Vec::new();
    std::fs::File::open(path).and_then(|f| f.take(limit + 1).read_to_end(&mut bytes)).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(Error::Data {
            file: path.display().to_string(),
            field: "(file)".into(),
            reason: format!("larger than {limit} bytes: not a file of this kind"),
        });
    }
    Ok(bytes)
}

/// [`read_capped`] as UTF-8 text.
pub fn read_text_capped(path: &Path, limit: u64) -> Result<String> {
    String::from_utf8(read_capped(path, limit)?).map_err(|e| Error::Data {
        file: path.display().to_string(),
        field: "(file)".into(),
        reason: format!("not UTF-8: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_file_is_refused_after_the_limit() {
        let err = read_capped(Path::new("/dev/zero"), 1 << 20).unwrap_err().to_string();
        assert!(err.contains("/dev/zero") && err.contains("larger than 1048576 bytes"), "{err}");
    }
}
