//! JPEGs decode to the bytes Pillow gives (`Image.open(path).convert("RGB")`, libjpeg-turbo's
//! defaults), which is what torchvision's ImageFolder reads: tests/data/jpeg/pillow.json holds
//! the SHA-256 of Pillow's RGB bytes for each fixture (tests/data/jpeg/make.py) and for the 300
//! CIFAR-10 JPEGs of tests/data/cifar10-jpeg.

use sha2::{Digest, Sha256};
use std::path::Path;

fn pillow() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/jpeg/pillow.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn jpegs_decode_to_pillows_bytes() {
    let record = pillow();
    let files = record["files"].as_object().unwrap();
    assert!(files.len() > 300, "{} files", files.len());
    let mut differ = Vec::new();
    for (rel, want) in files {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
        let img = resnet::data::read_rgb(&path).unwrap();
        let got = format!("{:x}", Sha256::digest(img.as_raw()));
        if got != want.as_str().unwrap() {
            differ.push(rel.clone());
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} differ from Pillow {}: {differ:?}",
        differ.len(),
        files.len(),
        record["pillow"]
    );
}
