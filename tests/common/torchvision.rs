//! torchvision's own outputs, recorded by tests/data/torch/make.py: its JSON fixtures, their
//! base64 images, and the augmentation policies' strength tables compared with ours.

use base64::Engine;
use resnet::preprocess::auto_augment::{AugmentOp, Space};

/// torchvision's default `--interpolation`.
#[allow(dead_code)] // not every test that includes `common` resamples
pub const BILINEAR: resnet::preprocess::Interpolation = resnet::preprocess::Interpolation::Bilinear;

/// The fixture tests/data/torch/`name`.
pub fn fixture(name: &str) -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/torch")
        .join(name);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The bytes of a base64 string of a fixture.
pub fn bytes(v: &serde_json::Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
}

/// How `ours` differs from the reference bytes `want` (torchvision's or Pillow's), `None` where
/// it does not: how many bytes differ, by at most how much, and the first three (index, ours,
/// theirs).
#[allow(dead_code)] // not every test that includes `common` compares images
pub fn differences(ours: &image::RgbImage, want: &[u8]) -> Option<String> {
    let off: Vec<(usize, u8, u8)> = ours
        .as_raw()
        .iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| (i, *a, *b))
        .collect();
    let largest = off
        .iter()
        .map(|&(_, a, b)| a.abs_diff(b))
        .max()
        .unwrap_or(0);
    (!off.is_empty() || ours.as_raw().len() != want.len()).then(|| {
        format!(
            "{} of {} bytes differ (sizes {} and {}), by at most {largest}, first {:?} (ours, theirs)",
            off.len(),
            want.len(),
            ours.as_raw().len(),
            want.len(),
            &off[..off.len().min(3)]
        )
    })
}

/// `space`'s tables of the operations `ops` against torchvision's `_augmentation_space`
/// (`tables`: per operation's name, whether its strength is signed, and its float32 strengths,
/// none where it takes none): the same operations, signs and values.
pub fn same_tables(tables: &serde_json::Value, ops: &[AugmentOp], space: Space) {
    let tables = tables.as_object().unwrap();
    let mut theirs: Vec<&str> = tables.keys().map(|k| k.as_str()).collect();
    let mut ours: Vec<&str> = ops.iter().map(|op| op.name()).collect();
    theirs.sort();
    ours.sort();
    assert_eq!(ours, theirs, "the operations of {space:?}");
    let bins = space.bins();
    for (name, table) in tables {
        let op = *ops.iter().find(|op| op.name() == name).unwrap();
        assert_eq!(op.signed(), table["signed"].as_bool().unwrap(), "{name}");
        // float32 values (serde_json's parse of a float64 may be an ulp off; a float32 is not)
        let magnitudes: Vec<f32> = table["magnitudes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(op.has_magnitude(), magnitudes.len() == bins, "{name}");
        if op.has_magnitude() {
            let ours: Vec<f32> = (0..bins).map(|b| op.magnitude(space, b) as f32).collect();
            assert_eq!(ours, magnitudes, "{space:?} {name}'s table");
        }
    }
}
