//! The SHA-256 of each image's RGB bytes as resnet reads it (`resnet::data::read_rgb`), one
//! `path sha256` line per path read from standard input: to hold a folder of photos to Pillow's
//! decoding, whose `hashlib.sha256(Image.open(p).convert("RGB").tobytes())` gives the same
//! digests where the bytes agree (BENCHMARKS.md).
//!
//! `find photos -name '*.jpg' | cargo run --release --example decoded_sha256`

use sha2::{Digest, Sha256};
use std::io::BufRead;

fn main() {
    for line in std::io::stdin().lock().lines() {
        let path = line.expect("a path on standard input");
        match resnet::data::read_rgb(std::path::Path::new(&path)) {
            Ok(img) => println!("{path} {:x}", Sha256::digest(img.as_raw())),
            Err(e) => eprintln!("{e}"),
        }
    }
}
