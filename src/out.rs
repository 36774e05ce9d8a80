//! Everything `dsv3` writes: stdout, whose errors end the command like any other error instead of the
//! panic of `println!`; stderr, whose errors are ignored instead of the panic of `eprintln!`; and the
//! files named on the command line, which are never replaced when they are not regular files.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// The exit status when whoever read stdout has gone (`dsv3 devices | head -1`): what a shell reports for
/// a tool ended by SIGPIPE (128 + 13), which is how C tools behave; nothing is printed.
pub const BROKEN_PIPE_STATUS: i32 = 141;

/// A failed write to stdout other than a closed pipe (a full disk: `> /dev/full`).
#[derive(Debug)]
pub struct StdoutError(io::Error);

impl fmt::Display for StdoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "writing to stdout: {}", self.0)
    }
}

impl From<StdoutError> for String {
    fn from(e: StdoutError) -> String {
        e.to_string()
    }
}

impl From<StdoutError> for dsv3_core::Error {
    fn from(e: StdoutError) -> dsv3_core::Error {
        dsv3_core::Error::Io { context: "writing to stdout".into(), source: e.0 }
    }
}

/// Writes `args` to stdout and flushes. A closed pipe ends the process quietly with
/// [`BROKEN_PIPE_STATUS`]: there is nobody left to tell, and the rest of the output has nowhere to go.
pub fn stdout(args: fmt::Arguments) -> Result<(), StdoutError> {
    let mut out = io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => std::process::exit(BROKEN_PIPE_STATUS),
        Err(e) => Err(StdoutError(e)),
    }
}

/// `print!` whose errors are returned (see [`stdout`]).
macro_rules! out {
    ($($arg:tt)*) => { $crate::out::stdout(format_args!($($arg)*)) };
}

/// `println!` whose errors are returned (see [`stdout`]).
macro_rules! outln {
    () => { $crate::out::stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::out::stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `eprint!` that never panics (see [`Stderr`]).
macro_rules! err {
    ($($arg:tt)*) => { $crate::out::stderr(format_args!($($arg)*)) };
}

/// `eprintln!` that never panics (see [`Stderr`]).
macro_rules! errln {
    ($($arg:tt)*) => { $crate::out::stderr(format_args!("{}\n", format_args!($($arg)*))) };
}

pub(crate) use {err, errln, out, outln};

/// Stderr whose write errors are dropped. Stderr is where dsv3 says what went wrong; when it is itself
/// gone (`2>&-` is harmless, but a closed pipe or a full disk is not), there is nowhere left to say
/// anything, and `eprintln!`'s panic would turn a finished command into exit status 101. The log
/// lines (`crate::logging`) go through it too.
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes `args` to stderr, ignoring errors (see [`Stderr`]).
pub fn stderr(args: fmt::Arguments) {
    let _ = io::stderr().lock().write_fmt(args);
}

/// Refuses an output path that is a directory or whose directory does not exist: asked before a long run,
/// so its results are not lost at the end.
pub fn writable(flag: &str, file: &Path) -> Result<(), String> {
    if file.is_dir() {
        return Err(format!("{flag} {}: is a directory", file.display()));
    }
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(format!("{flag} {}: no directory {}", file.display(), dir.display()));
    }
    Ok(())
}

/// Writes `bytes` to the file `path` names (`flag` is the option that named it, for messages). A new path
/// or a regular file is written to a temporary file beside it and renamed over it, so a failed write
/// leaves the old file whole. Anything else is written through in place, never replaced: a symlink's
/// target, `/dev/null`, a FIFO or a terminal stay what they are (renaming over `/dev/null` as root would
/// turn the device into a regular file). A directory is refused.
pub fn write_file(flag: &str, path: &Path, bytes: &[u8]) -> Result<(), String> {
    let fail = |e: io::Error| format!("{flag} {}: {e}", path.display());
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => replace(path, bytes).map_err(fail),
        Err(e) => Err(fail(e)),
        Ok(meta) if meta.is_file() => replace(path, bytes).map_err(fail),
        Ok(meta) if meta.is_dir() => Err(format!("{flag} {}: is a directory", path.display())),
        // Symlinks (followed), devices, FIFOs, sockets: in place.
        Ok(_) => {
            let mut file =
                OpenOptions::new().write(true).truncate(true).create(true).open(path).map_err(fail)?;
            file.write_all(bytes).and_then(|()| file.flush()).map_err(fail)
        }
    }
}

/// Temporary file in the same directory (a rename does not cross file systems), then rename.
fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| io::Error::other("not a file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".dsv3-tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let written = File::create_new(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    match written.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp); // best effort: the write's error is the one to report
            Err(e)
        }
    }
}
