//! `pretrained` URLs: weights downloaded once into the cache directory (`fetch`: resumed where
//! a broken-off or killed download stopped, checked against `pretrained_sha256` when given,
//! nothing partial left behind).

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::download::{archive_name, parse_hex_digest};
use super::fetch::{fetch, locked, Digest, Transfer};
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

/// torchvision's ImageNet weights for its ResNets (`torchvision.models.ResNet50_Weights` and
/// the others): model, weights name, URL. A model's last is its `DEFAULT`, as in torchvision.
const TORCHVISION_WEIGHTS: [(&str, &str, &str); 8] = [
    (
        "resnet18",
        "IMAGENET1K_V1",
        "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    ),
    (
        "resnet34",
        "IMAGENET1K_V1",
        "https://download.pytorch.org/models/resnet34-b627a593.pth",
    ),
    (
        "resnet50",
        "IMAGENET1K_V1",
        "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    ),
    (
        "resnet50",
        "IMAGENET1K_V2",
        "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
    ),
    (
        "resnet101",
        "IMAGENET1K_V1",
        "https://download.pytorch.org/models/resnet101-63fe2227.pth",
    ),
    (
        "resnet101",
        "IMAGENET1K_V2",
        "https://download.pytorch.org/models/resnet101-cd907fc2.pth",
    ),
    (
        "resnet152",
        "IMAGENET1K_V1",
        "https://download.pytorch.org/models/resnet152-394f9c45.pth",
    ),
    (
        "resnet152",
        "IMAGENET1K_V2",
        "https://download.pytorch.org/models/resnet152-f82ba261.pth",
    ),
];

/// torchvision's weights of `model` named by `source`, as torchvision names them
/// (`IMAGENET1K_V2`, `DEFAULT`, or in full `ResNet50_Weights.IMAGENET1K_V2`; any case): their URL
/// and the SHA-256 prefix in its file name, which torchvision checks too. `None` when `source` is
/// not such a name (it is a file or a URL); an error naming the setting `what` when it is one
/// that `model` has no weights under.
pub fn torchvision_weights(
    (what, source): (&str, &str),
    model: &str,
) -> Option<Result<(String, Digest)>> {
    let upper = source.to_ascii_uppercase();
    let (named_model, name) = match upper.split_once('.') {
        Some((class, name)) => (Some(class.strip_suffix("_WEIGHTS")?.to_lowercase()), name),
        None => (None, upper.as_str()),
    };
    if name != "DEFAULT" && !name.starts_with("IMAGENET1K_V") {
        return None;
    }
    let fail = |why: String| Some(invalid(format!("`{what}` {source}: {why}")));
    if let Some(named) = named_model.filter(|m| m != model) {
        return fail(format!("names {named}'s weights, the model is {model}"));
    }
    let own: Vec<_> = TORCHVISION_WEIGHTS
        .iter()
        .filter(|w| w.0 == model)
        .collect();
    let Some(last) = own.last() else {
        return fail(format!(
            "torchvision has ImageNet weights for resnet18, resnet34, resnet50, resnet101 and \
             resnet152, not {model}"
        ));
    };
    let url = match own.iter().find(|w| w.1 == name) {
        Some(w) => w.2,
        None if name == "DEFAULT" => last.2,
        None => {
            let names: Vec<&str> = own.iter().map(|w| w.1).collect();
            return fail(format!(
                "torchvision's {model} has {} (DEFAULT: {})",
                names.join(", "),
                last.1
            ));
        }
    };
    // `resnet50-11ad3fa6.pth`: the hex digits after the last '-'
    let prefix = url
        .rsplit_once('-')
        .and_then(|(_, t)| t.strip_suffix(".pth"));
    Some(Ok((
        url.to_string(),
        Digest::Sha256Prefix(
            prefix
                .expect("torchvision URLs end in -HASH.pth")
                .to_string(),
        ),
    )))
}

/// The file of the weights `source` names, for the setting `what` (`pretrained`, `checkpoint`):
/// a file as it is; an http(s) URL, or one of torchvision's weight names for `model` (see
/// [`torchvision_weights`]), downloaded into `cache_dir` once. `sha256`, when given, is checked
/// in every case (a download that does not match is deleted).
pub fn weights_file(
    (what, source): (&str, &str),
    model: Option<&str>,
    sha256: Option<&str>,
    cache_dir: &Path,
    progress: &mut dyn FnMut(Transfer),
) -> Result<PathBuf> {
    let full = sha256.map(parse_sha256).transpose()?.map(Digest::Sha256);
    let local = Path::new(source);
    if local.exists() || !(is_url(source) || torchvision_name(source)) {
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
        return Ok(local.to_path_buf());
    }
    if is_url(source) {
        return fetch_pretrained(source, full.unwrap_or(Digest::None), cache_dir, progress);
    }
    let Some(model) = model else {
        return invalid(format!(
            "`{what}` {source}: torchvision's weights of which model? Say it with `model`"
        ));
    };
    let (url, prefix) = torchvision_weights((what, source), model).expect("a torchvision name")?;
    fetch_pretrained(&url, full.unwrap_or(prefix), cache_dir, progress)
}

/// Whether `s` has the form of a torchvision weights name (see [`torchvision_weights`]).
fn torchvision_name(s: &str) -> bool {
    torchvision_weights(("", s), "resnet50").is_some()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn url_of(model: &str, name: &str) -> String {
        match torchvision_weights(("pretrained", name), model) {
            Some(Ok((url, _))) => url,
            other => panic!("{model} {name}: {other:?}"),
        }
    }

    fn error_of(model: &str, name: &str) -> String {
        match torchvision_weights(("pretrained", name), model) {
            Some(Err(e)) => e.to_string(),
            other => panic!("{model} {name}: {other:?}"),
        }
    }

    #[test]
    fn torchvision_weight_names_resolve_as_torchvision_resolves_them() {
        let models = "https://download.pytorch.org/models";
        // torchvision.models.ResNet50_Weights.DEFAULT is IMAGENET1K_V2; ResNet18's is V1
        assert_eq!(
            url_of("resnet50", "DEFAULT"),
            format!("{models}/resnet50-11ad3fa6.pth")
        );
        assert_eq!(
            url_of("resnet18", "DEFAULT"),
            format!("{models}/resnet18-f37072fd.pth")
        );
        assert_eq!(
            url_of("resnet50", "ResNet50_Weights.IMAGENET1K_V1"),
            format!("{models}/resnet50-0676ba61.pth")
        );
        assert_eq!(
            url_of("resnet152", "imagenet1k_v2"),
            format!("{models}/resnet152-f82ba261.pth")
        );
        match torchvision_weights(("pretrained", "IMAGENET1K_V2"), "resnet101") {
            Some(Ok((_, Digest::Sha256Prefix(p)))) => assert_eq!(p, "cd907fc2"),
            other => panic!("{other:?}"),
        }
        // files and URLs are not names
        for not_a_name in ["resnet50.pth", "weights.safetensors", "https://x/DEFAULT"] {
            assert!(
                torchvision_weights(("pretrained", not_a_name), "resnet50").is_none(),
                "{not_a_name}"
            );
        }
    }

    #[test]
    fn a_torchvision_name_a_model_lacks_is_one_error_saying_what_there_is() {
        let e = error_of("resnet20", "DEFAULT");
        assert!(e.contains("resnet20") && e.contains("resnet152"), "{e}");
        let e = error_of("resnet18", "IMAGENET1K_V2");
        assert!(e.contains("IMAGENET1K_V1") && e.contains("resnet18"), "{e}");
        let e = error_of("resnet18", "ResNet50_Weights.DEFAULT");
        assert!(e.contains("resnet50") && e.contains("resnet18"), "{e}");
        assert!(e.contains("`pretrained`"), "{e}");
    }

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
