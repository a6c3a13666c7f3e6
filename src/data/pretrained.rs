//! `--pretrained URL`: weights downloaded once into the cache directory, with a progress bar, a
//! download that breaks off resumed where it stopped (HTTP Range), and an optional SHA-256 check.
//! The file appears under its final name only when it is whole and verified; on failure nothing
//! is left in the cache.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::download::{agent, archive_name, progress_bar};
use super::{invalid, io_err};
use crate::Result;

/// How many times a download that breaks off is resumed before giving up.
const RESUMES: usize = 5;

/// True when `s` is an http(s) URL rather than a file path.
pub fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// A SHA-256 as lower-case hex, or an error naming `--pretrained-sha256`.
pub fn parse_sha256(s: &str) -> Result<String> {
    super::download::parse_hex_digest(s, ("--pretrained-sha256", "a SHA-256", 64))
}

/// Lower-case hex SHA-256 of a file.
pub fn file_sha256(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| io_err(path, "cannot open", e))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(|e| io_err(path, "cannot read", e))?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// The weights at `url` as a file in `cache_dir/pretrained/`, named after the URL's last path
/// segment prefixed by a hash of the whole URL (hub URLs all end in `model.safetensors`):
/// downloaded unless already there (and matching `sha256` when given).
pub fn fetch_pretrained(url: &str, sha256: Option<&str>, cache_dir: &Path) -> Result<PathBuf> {
    let sha256 = sha256.map(parse_sha256).transpose()?;
    let dir = cache_dir.join("pretrained");
    let url_hash = format!("{:x}", Sha256::digest(url.as_bytes()));
    let name = archive_name(url, "pretrained.safetensors");
    let dest = dir.join(format!("{}-{name}", &url_hash[..12]));
    if dest.is_file() {
        match &sha256 {
            Some(want) if file_sha256(&dest)? != *want => {
                eprintln!(
                    "{}: checksum differs from --pretrained-sha256; downloading again",
                    dest.display()
                );
            }
            _ => return Ok(dest),
        }
    }
    fs::create_dir_all(&dir).map_err(|e| io_err(&dir, "cannot create directory", e))?;
    // one name per URL: a run killed mid-download leaves it, and the next run resumes it
    let part = dest.with_file_name(format!(
        "{}.part",
        dest.file_name().unwrap_or_default().to_string_lossy()
    ));
    let result = download_resuming(url, &part).and_then(|()| {
        if let Some(want) = &sha256 {
            let got = file_sha256(&part)?;
            if got != *want {
                return Err(invalid(format!(
                    "{url}: checksum mismatch: sha256 {got}, expected {want}; the download was deleted"
                )));
            }
        }
        fs::rename(&part, &dest).map_err(|e| io_err(&dest, "cannot rename into", e))
    });
    if result.is_err() {
        let _ = fs::remove_file(&part);
    }
    result.map(|()| dest)
}

/// Downloads `url` into `part` (continuing what a killed run left there), resuming with a Range
/// request when the connection breaks off.
fn download_resuming(url: &str, part: &Path) -> Result<()> {
    if !part.exists() {
        File::create(part).map_err(|e| io_err(part, "cannot create", e))?;
    }
    let mut last_err = None;
    for _ in 0..=RESUMES {
        let have = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        match download_from(url, part, have) {
            Ok(()) => return Ok(()),
            Err(Broke::Fatal(e)) => return Err(e),
            Err(Broke::Resumable(e)) => {
                last_err = Some(e);
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    Err(invalid(format!(
        "downloading {url}: broke off {} times: {}",
        RESUMES + 1,
        last_err.unwrap_or_default()
    )))
}

/// Why a download attempt ended early.
enum Broke {
    /// The connection broke off: resume.
    Resumable(String),
    /// The server or the file refused: give up.
    Fatal(crate::Error),
}

/// One attempt: asks for the bytes from `have` on and appends them to `part`.
fn download_from(url: &str, part: &Path, have: u64) -> std::result::Result<(), Broke> {
    let mut req = agent().get(url);
    if have > 0 {
        req = req.header("Range", &format!("bytes={have}-"));
    }
    let response = match req.call() {
        Ok(r) => r,
        // the part already holds every byte (the connection broke after the last one)
        Err(ureq::Error::StatusCode(416)) if have > 0 => return Ok(()),
        Err(ureq::Error::StatusCode(code)) if code >= 500 => {
            return Err(Broke::Resumable(format!("HTTP status {code}")))
        }
        Err(ureq::Error::StatusCode(code)) => {
            return Err(Broke::Fatal(invalid(format!(
                "downloading {url}: HTTP status {code}"
            ))))
        }
        Err(other) => return Err(Broke::Resumable(other.to_string())),
    };
    let resumed = have > 0 && response.status() == 206;
    let len = response.body().content_length();
    let fatal = |e: io::Error| Broke::Fatal(io_err(part, "cannot write", e));
    let mut file = if resumed {
        OpenOptions::new().append(true).open(part).map_err(fatal)?
    } else {
        // a server that ignores Range sends the whole file again
        File::create(part).map_err(fatal)?
    };
    let start = if resumed { have } else { 0 };
    let bar = progress_bar(len.map(|l| l + start), url);
    bar.set_position(start);
    let mut body = response.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bar.abandon();
                return Err(Broke::Resumable(e.to_string()));
            }
        };
        file.write_all(&buf[..n]).map_err(fatal)?;
        got += n as u64;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    if len.is_some_and(|l| got < l) {
        return Err(Broke::Resumable(format!(
            "{got} of {} bytes",
            len.unwrap_or(0)
        )));
    }
    file.sync_all().map_err(fatal)
}
