//! `pretrained` URLs: weights downloaded once into the cache directory (`fetch`: resumed where
//! a broken-off or killed download stopped, checked against `pretrained_sha256` when given,
//! nothing partial left behind).

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::download::{archive_name, parse_hex_digest};
use super::fetch::{fetch, locked, Digest, Transfer};
use crate::Result;

/// True when `s` is an http(s) URL rather than a file path.
pub fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// A SHA-256 as lower-case hex, or an error naming `pretrained_sha256`.
pub fn parse_sha256(s: &str) -> Result<String> {
    parse_hex_digest(s, ("`pretrained_sha256`", "a SHA-256", 64))
}

/// Lower-case hex SHA-256 of a file.
pub fn file_sha256(path: &Path) -> Result<String> {
    Digest::Sha256(String::new()).of_file(path)
}

/// The weights at `url` as a file in `cache_dir/pretrained/`, named after the URL's last path
/// segment prefixed by a hash of the whole URL (hub URLs all end in `model.safetensors`):
/// downloaded unless already there (and matching `sha256` when given).
pub fn fetch_pretrained(
    url: &str,
    sha256: Option<&str>,
    cache_dir: &Path,
    progress: &mut dyn FnMut(Transfer),
) -> Result<PathBuf> {
    let digest = match sha256 {
        Some(s) => Digest::Sha256(parse_sha256(s)?),
        None => Digest::None,
    };
    let dir = cache_dir.join("pretrained");
    let url_hash = format!("{:x}", Sha256::digest(url.as_bytes()));
    let name = archive_name(url, "pretrained.safetensors");
    let dest = dir.join(format!("{}-{name}", &url_hash[..12]));
    let cached = |progress: &mut dyn FnMut(Transfer)| -> Result<bool> {
        if !dest.is_file() {
            return Ok(false);
        }
        if digest.matches(&dest)? {
            return Ok(true);
        }
        progress(Transfer::Note(format!(
            "{}: checksum differs from `pretrained_sha256`; downloading again",
            dest.display()
        )));
        Ok(false)
    };
    if cached(progress)? {
        return Ok(dest);
    }
    std::fs::create_dir_all(&dir).map_err(|e| super::io_err(&dir, "cannot create directory", e))?;
    // another process may be downloading the same file: the second finds it done
    let lock = dest.with_file_name(format!("{}-{name}.lock", &url_hash[..12]));
    locked(&lock, || match dest.is_file() && digest.matches(&dest)? {
        true => Ok(()),
        false => fetch(url, &dest, &digest, progress),
    })?;
    Ok(dest)
}
