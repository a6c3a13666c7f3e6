//! Download, checksum and extraction of the official CIFAR-10 binary archive.

use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use super::fetch::{fetch, locked, Digest, Transfer};
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

/// Downloads the CIFAR-10 binary archive from `url` into `cache_dir` (`progress` hears the
/// bytes), checks its MD5 against `md5` (hex), extracts it there and returns `cache_dir`, the
/// directory containing cifar-10-batches-bin. Nothing is fetched when the archive is already
/// there and verified; a download whose checksum does not match is deleted and is an error.
pub fn download_cifar10(
    url: &str,
    md5: &str,
    cache_dir: &Path,
    progress: &mut dyn FnMut(Transfer),
) -> Result<PathBuf> {
    let md5 = parse_md5(md5)?;
    let marker = cache_dir.join(CIFAR_DIR).join(MARKER);
    let filled = || fs::read_to_string(&marker).is_ok_and(|m| m.trim() == md5);
    if filled() {
        return Ok(cache_dir.to_path_buf());
    }
    fs::create_dir_all(cache_dir).map_err(|e| io_err(cache_dir, "cannot create directory", e))?;
    // another process may be filling the same cache: the second finds it done
    locked(&cache_dir.join(".cifar-10.lock"), || match filled() {
        true => Ok(()),
        false => fill_cifar10(url, &md5, cache_dir, progress),
    })?;
    Ok(cache_dir.to_path_buf())
}

/// Downloads the archive into `cache_dir` unless a verified copy is there, and extracts it.
fn fill_cifar10(
    url: &str,
    md5: &str,
    cache_dir: &Path,
    progress: &mut dyn FnMut(Transfer),
) -> Result<()> {
    let digest = Digest::Md5(md5.to_string());
    let extracted = cache_dir.join(CIFAR_DIR);
    let archive = cache_dir.join(archive_name(url, FALLBACK_NAME));
    if !(archive.is_file() && digest.matches(&archive)?) {
        fetch(url, &archive, &digest, progress)?;
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
    let marker = extracted.join(MARKER);
    fs::write(&marker, md5).map_err(|e| io_err(&marker, "cannot write", e))
}

/// A checksum as lower-case hex, or an error when it is not an MD5 (32 hex digits).
pub fn parse_md5(md5: &str) -> Result<String> {
    parse_hex_digest(md5, ("`data_md5`", "an MD5", 32))
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
