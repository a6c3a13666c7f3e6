//! Running the `resnet` binary and checking how it ends.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

/// `resnet args` with the register kernels and `cache` as its cache directory.
pub fn resnet_with_cache<S: AsRef<OsStr>>(args: &[S], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_resnet"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .env("RESNET_CACHE", cache)
        .env("RESNET_KERNELS", "register")
        .output()
        .unwrap()
}

/// `resnet args` with a fresh, empty cache directory.
pub fn resnet(args: &[&str]) -> Output {
    let cache = tempfile::tempdir().unwrap();
    resnet_with_cache(args, cache.path())
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success; returns stderr (the progress and the messages).
pub fn ok(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}", stderr(o));
    stderr(o)
}

/// Asserts a clean failure: non-zero exit, one `error:` line last mentioning every `needle`, no
/// panic.
pub fn fails_with(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    let last = err
        .lines()
        .rev()
        .find(|l| !l.contains("XDG_RUNTIME_DIR"))
        .unwrap_or("");
    assert!(
        last.starts_with("error: "),
        "last line is not an error line: {err}"
    );
    for n in needles {
        assert!(last.contains(n), "error line lacks '{n}': {last}");
    }
}
