//! Weights named by a file, a URL or torchvision's name for them (`pretrained`, and
//! `resnet eval/predict --checkpoint`): URLs downloaded once into the cache directory (`fetch`:
//! resumed where a broken-off or killed download stopped, checked against `pretrained_sha256`
//! or the SHA-256 prefix in a torchvision file's name, nothing partial left behind).

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::download::{archive_name, parse_hex_digest};
use super::fetch::{fetch, locked, Digest, Transfer};
use super::torchvision::{is_torchvision_name, torchvision_weights, TorchvisionWeights};
use crate::{Error, Result};

fn invalid<T>(msg: String) -> Result<T> {
    Err(Error::Invalid(msg))
}

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

/// The file of the weights `source` names, for the setting `what` (`pretrained`, `checkpoint`):
/// a file as it is; an http(s) URL, or one of torchvision's weight names for `model` (see
/// [`torchvision_weights`]), downloaded into `cache_dir` once; with the torchvision weights it
/// resolved to, if a name. `sha256`, when given, is checked in every case (a download that does
/// not match is deleted).
pub fn weights_file(
    (what, source): (&str, &str),
    model: Option<&str>,
    sha256: Option<&str>,
    cache_dir: &Path,
    progress: &mut dyn FnMut(Transfer),
) -> Result<(PathBuf, Option<TorchvisionWeights>)> {
    let full = sha256.map(parse_sha256).transpose()?.map(Digest::Sha256);
    let local = Path::new(source);
    if local.exists() || !(is_url(source) || is_torchvision_name(source)) {
        if let Some(digest) = full {
            let got = file_sha256(local)?;
            if !digest.accepts(&got) {
                return invalid(format!(
                    "`{what}` {}: sha256 {got}, expected {}",
                    local.display(),
                    digest.wanted().unwrap_or_default()
                ));
            }
        }
        return Ok((local.to_path_buf(), None));
    }
    if is_url(source) {
        let path = fetch_pretrained(source, full.unwrap_or(Digest::None), cache_dir, progress)?;
        return Ok((path, None));
    }
    let Some(model) = model else {
        return invalid(format!(
            "`{what}` {source}: torchvision's weights of which model? Say it with `model`"
        ));
    };
    let w = torchvision_weights((what, source), model).expect("a torchvision name")?;
    if let Some(path) = w.in_torch_hub() {
        if full.as_ref().map_or(Ok(true), |d| d.matches(&path))? {
            progress(Transfer::Note(format!(
                "`{what}` {source}: torchvision's {} {}, {} (torch.hub's copy)",
                w.model,
                w.name,
                path.display()
            )));
            return Ok((path, Some(w)));
        }
    }
    let path = fetch_pretrained(&w.url(), full.unwrap_or(w.digest()), cache_dir, progress)?;
    Ok((path, Some(w)))
}

/// The weights at `url` as a file in `cache_dir/pretrained/`, named after the URL's last path
/// segment prefixed by a hash of the whole URL (hub URLs all end in `model.safetensors`):
/// downloaded unless already there (and matching `digest`).
pub fn fetch_pretrained(
    url: &str,
    digest: Digest,
    cache_dir: &Path,
    progress: &mut dyn FnMut(Transfer),
) -> Result<PathBuf> {
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
            "{}: its checksum is not the one expected; downloading again",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sha256_prefix_accepts_the_files_that_start_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("w.pth");
        std::fs::write(&file, b"abc").unwrap();
        // SHA-256("abc"), FIPS 180-2's example
        let full = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(file_sha256(&file).unwrap(), full);
        assert!(Digest::Sha256Prefix("ba7816bf".into())
            .matches(&file)
            .unwrap());
        assert!(!Digest::Sha256Prefix("ba7816be".into())
            .matches(&file)
            .unwrap());
        assert!(Digest::Sha256(full.into()).matches(&file).unwrap());
    }
}
