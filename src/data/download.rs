//! Download, checksum and extraction of the official CIFAR-10 binary archive.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flate2::read::GzDecoder;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use md5::{Digest, Md5};

use super::{invalid, io_err, CIFAR_DIR};
use crate::Result;

/// Where the official CIFAR-10 binary archive is published.
pub const CIFAR10_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// MD5 of the archive at [`CIFAR10_URL`], lower-case hex.
pub const CIFAR10_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";

/// File inside the extracted folder recording the MD5 of the archive it came from.
const MARKER: &str = ".resnet-wgpu-md5";
const FALLBACK_NAME: &str = "cifar-10-binary.tar.gz";

/// Default cache directory (downloads, kernel choices): $RESNET_CACHE if set, else
/// $XDG_CACHE_HOME/resnet-wgpu or ~/.cache/resnet-wgpu.
pub fn default_cache_dir() -> PathBuf {
    let nonempty = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = nonempty("RESNET_CACHE") {
        return dir;
    }
    nonempty("XDG_CACHE_HOME")
        .filter(|p| p.is_absolute())
        .or_else(|| {
            nonempty("HOME")
                .or_else(|| nonempty("USERPROFILE"))
                .map(|h| h.join(".cache"))
        })
        .unwrap_or_else(std::env::temp_dir)
        .join("resnet-wgpu")
}

/// Downloads the CIFAR-10 binary archive from `url` into `cache_dir` with a progress bar (hidden when
/// stderr is not a terminal), checks its MD5 against `md5` (hex), extracts it there and returns
/// `cache_dir`, the directory containing cifar-10-batches-bin. Nothing is fetched when the archive is
/// already there and verified; a download whose checksum does not match is deleted and is an error.
pub fn download_cifar10(url: &str, md5: &str, cache_dir: &Path) -> Result<PathBuf> {
    let md5 = parse_md5(md5)?;
    let extracted = cache_dir.join(CIFAR_DIR);
    let marker = extracted.join(MARKER);
    if fs::read_to_string(&marker).is_ok_and(|m| m.trim() == md5) {
        return Ok(cache_dir.to_path_buf());
    }
    fs::create_dir_all(cache_dir).map_err(|e| io_err(cache_dir, "cannot create directory", e))?;
    let archive = cache_dir.join(archive_name(url, FALLBACK_NAME));
    if !(archive.is_file() && file_md5(&archive)? == md5) {
        fetch(url, &archive, &md5)?;
    }
    if extracted.exists() {
        fs::remove_dir_all(&extracted).map_err(|e| io_err(&extracted, "cannot remove", e))?;
    }
    let file = File::open(&archive).map_err(|e| io_err(&archive, "cannot open", e))?;
    tar::Archive::new(GzDecoder::new(BufReader::new(file)))
        .unpack(cache_dir)
        .map_err(|e| io_err(&archive, "cannot extract", e))?;
    if !extracted.is_dir() {
        return Err(invalid(format!(
            "{}: the archive has no {CIFAR_DIR}/ folder",
            archive.display()
        )));
    }
    fs::write(&marker, &md5).map_err(|e| io_err(&marker, "cannot write", e))?;
    Ok(cache_dir.to_path_buf())
}

/// A checksum as lower-case hex, or an error when it is not an MD5 (32 hex digits).
pub fn parse_md5(md5: &str) -> Result<String> {
    parse_hex_digest(md5, ("--data-md5", "an MD5", 32))
}

/// A digest given as hex, in lower case; an error naming the option, the kind of digest (with
/// its article) and its length when it is not `digits` hex digits.
pub(super) fn parse_hex_digest(
    given: &str,
    (option, kind, digits): (&str, &str, usize),
) -> Result<String> {
    let hex = given.trim().to_ascii_lowercase();
    if hex.len() != digits || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(format!(
            "{option} {given:?}: not {kind} ({digits} hex digits)"
        )));
    }
    Ok(hex)
}

/// The last path segment of `url` when it is a plain file name, else `fallback`.
pub(super) fn archive_name(url: &str, fallback: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let name = path.rsplit('/').next().unwrap_or("");
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if plain && !name.is_empty() && !name.starts_with('.') {
        name.to_string()
    } else {
        fallback.to_string()
    }
}

/// Lower-case hex MD5 of a file.
fn file_md5(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| io_err(path, "cannot open", e))?;
    let mut hasher = Md5::new();
    io::copy(&mut file, &mut hasher).map_err(|e| io_err(path, "cannot read", e))?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// Downloads `url` to a temporary file next to `dest`, checks the MD5, and renames it to `dest`;
/// the temporary file is removed on any failure.
fn fetch(url: &str, dest: &Path, md5: &str) -> Result<()> {
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dest.with_file_name(format!("{name}.part{}", std::process::id()));
    let result = fetch_to(url, &tmp, md5)
        .and_then(|()| fs::rename(&tmp, dest).map_err(|e| io_err(dest, "cannot rename into", e)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// An HTTP agent with time-outs, on the platform's TLS (Cargo.toml).
pub(super) fn agent() -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(60)));
    // Cargo.toml: the system's TLS on Windows and macOS, rustls elsewhere
    #[cfg(any(target_os = "windows", target_os = "macos"))]
    let config = config.tls_config(
        ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::NativeTls)
            .build(),
    );
    config.build().into()
}

fn fetch_to(url: &str, tmp: &Path, md5: &str) -> Result<()> {
    let response = agent()
        .get(url)
        .call()
        .map_err(|e| invalid(format!("downloading {url}: {e}")))?;
    let len = response.body().content_length();
    let mut body = response.into_body().into_reader();
    let file = File::create(tmp).map_err(|e| io_err(tmp, "cannot create", e))?;
    let mut out = BufWriter::new(file);
    let bar = progress_bar(len, url);
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bar.abandon();
                return Err(invalid(format!("downloading {url}: {e}")));
            }
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| io_err(tmp, "cannot write", e))?;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    let file = out
        .into_inner()
        .map_err(|e| io_err(tmp, "cannot write", e.into_error()))?;
    file.sync_all()
        .map_err(|e| io_err(tmp, "cannot write", e))?;
    let got = format!("{:x}", hasher.finalize());
    if got != md5 {
        return Err(invalid(format!(
            "{url}: checksum mismatch: md5 {got}, expected {md5}; the download was deleted"
        )));
    }
    Ok(())
}

/// A byte-counting bar on stderr, hidden when stderr is not a terminal.
pub(super) fn progress_bar(len: Option<u64>, url: &str) -> ProgressBar {
    use std::io::IsTerminal;
    let target = if io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let template = if len.is_some() {
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{msg} {spinner} {bytes} {bytes_per_sec}"
    };
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    ProgressBar::with_draw_target(len, target)
        .with_style(style)
        .with_message(format!("downloading {url}"))
}
