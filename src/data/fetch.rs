//! The one download of the library (CIFAR-10's archive, pretrained weights): into `DEST.part`,
//! resumed with an HTTP Range request when the connection breaks off (and by the next run when
//! this one is killed), checked against a digest, then renamed to `DEST`. On a failure in this
//! process the part is removed, so the cache never holds a partial or unverified file. Progress
//! goes to the caller (the library draws nothing).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Duration;

use md5::Md5;
use sha2::{Digest as _, Sha256};

use super::{invalid, io_err};
use crate::Result;

/// How many times a download that breaks off is resumed before giving up.
const RESUMES: usize = 5;

/// The digest a download must have, as lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Digest {
    /// MD5 (the CIFAR-10 archive's published checksum).
    Md5(String),
    /// SHA-256 (`pretrained_sha256`).
    Sha256(String),
    /// The first hex digits of a SHA-256: torchvision's weight files carry them in their names
    /// (`resnet50-11ad3fa6.pth`), and torch.hub checks them as this does.
    Sha256Prefix(String),
    /// Nothing to check.
    None,
}

impl Digest {
    /// The digest of the file at `path`, of the same kind, as lower-case hex ("" for `None`).
    pub fn of_file(&self, path: &Path) -> Result<String> {
        let mut file = File::open(path).map_err(|e| io_err(path, "cannot open", e))?;
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let read = |e| io_err(path, "cannot read", e);
        Ok(match self {
            Digest::Md5(_) => {
                let mut h = Md5::new();
                io::copy(&mut file, &mut h).map_err(read)?;
                hex(&h.finalize())
            }
            Digest::Sha256(_) | Digest::Sha256Prefix(_) => {
                let mut h = Sha256::new();
                io::copy(&mut file, &mut h).map_err(read)?;
                hex(&h.finalize())
            }
            Digest::None => String::new(),
        })
    }

    /// Whether the file at `path` has this digest (always, for `None`).
    pub fn matches(&self, path: &Path) -> Result<bool> {
        Ok(match self.wanted() {
            Some(_) => self.accepts(&self.of_file(path)?),
            None => true,
        })
    }

    /// Whether a file whose digest is `got` (from [`Digest::of_file`]) has this digest.
    pub fn accepts(&self, got: &str) -> bool {
        match self {
            Digest::Md5(want) | Digest::Sha256(want) => got == want,
            Digest::Sha256Prefix(want) => got.starts_with(want.as_str()),
            Digest::None => true,
        }
    }

    /// The hex digits expected, if any.
    pub fn wanted(&self) -> Option<&str> {
        match self {
            Digest::Md5(w) | Digest::Sha256(w) | Digest::Sha256Prefix(w) => Some(w),
            Digest::None => None,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Digest::Md5(_) => "md5",
            Digest::Sha256(_) => "sha256",
            Digest::Sha256Prefix(_) => "sha256",
            Digest::None => "",
        }
    }
}

/// What a download reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Transfer {
    /// `done` of `total` bytes (when the server said) of `url` are here.
    Bytes {
        /// What is downloaded.
        url: String,
        /// Bytes so far.
        done: u64,
        /// The whole, if known.
        total: Option<u64>,
    },
    /// The download ended (a progress bar can go).
    Ended,
    /// Something worth a line: a cached copy that is fetched again, and why.
    Note(String),
}

/// Runs `f` holding an exclusive lock on the file `lock` (created if missing, left behind
/// empty), so that processes sharing a cache (two runs on one machine, ranks whose caches are one
/// file system) fill it one at a time: a later one waits, then finds it filled.
pub(super) fn locked<T>(lock: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock)
        .map_err(|e| io_err(lock, "cannot create", e))?;
    file.lock().map_err(|e| io_err(lock, "cannot lock", e))?;
    let result = f();
    let _ = file.unlock();
    result
}

/// Downloads `url` to `dest` as the module says; `progress` hears the bytes.
pub fn fetch(
    url: &str,
    dest: &Path,
    digest: &Digest,
    progress: &mut dyn FnMut(Transfer),
) -> Result<()> {
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    // one name per destination: a run killed mid-download leaves it, the next run resumes it
    let part = dest.with_file_name(format!("{name}.part"));
    let result = download_resuming(url, &part, progress).and_then(|()| {
        if let Some(want) = digest.wanted() {
            let got = digest.of_file(&part)?;
            if !digest.accepts(&got) {
                return Err(invalid(format!(
                    "{url}: checksum mismatch: {} {got}, expected {want}{}; the download was deleted",
                    digest.name(),
                    match digest {
                        Digest::Sha256Prefix(_) => "...",
                        _ => "",
                    }
                )));
            }
        }
        fs::rename(&part, dest).map_err(|e| io_err(dest, "cannot rename into", e))
    });
    progress(Transfer::Ended);
    if result.is_err() {
        let _ = fs::remove_file(&part);
    }
    result
}

/// An HTTP agent with time-outs, on the platform's TLS (Cargo.toml).
fn agent() -> ureq::Agent {
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

/// Downloads `url` into `part` (continuing what a killed run left there), resuming with a Range
/// request when the connection breaks off.
fn download_resuming(url: &str, part: &Path, progress: &mut dyn FnMut(Transfer)) -> Result<()> {
    if !part.exists() {
        File::create(part).map_err(|e| io_err(part, "cannot create", e))?;
    }
    let mut last_err = None;
    for _ in 0..=RESUMES {
        let have = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        match download_from(url, part, have, progress) {
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
fn download_from(
    url: &str,
    part: &Path,
    have: u64,
    progress: &mut dyn FnMut(Transfer),
) -> std::result::Result<(), Broke> {
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
        // nothing has arrived yet: a server that cannot be reached (no network, no such host,
        // refused, timed out) is not worth five more tries; a download that broke off is
        Err(other) if have == 0 => {
            return Err(Broke::Fatal(invalid(format!("downloading {url}: {other}"))))
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
    let total = len.map(|l| l + start);
    let mut body = response.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Broke::Resumable(e.to_string())),
        };
        file.write_all(&buf[..n]).map_err(fatal)?;
        got += n as u64;
        let (url, done) = (url.to_string(), start + got);
        progress(Transfer::Bytes { url, done, total });
    }
    if len.is_some_and(|l| got < l) {
        return Err(Broke::Resumable(format!(
            "{got} of {} bytes",
            len.unwrap_or(0)
        )));
    }
    file.sync_all().map_err(fatal)
}
