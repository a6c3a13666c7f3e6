//! The 2,000 + 500 real CIFAR-10 images that ship with the project (`web/data/`, 200 training and
//! 50 test images a class, made by `examples/web_subset.rs`), compiled into the binary so that
//! `resnet train` runs on any machine, even one that cannot download the full data set.

use super::cifar::CIFAR10;
use super::cifar_layout::empty;
use super::Split;

const TRAIN: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/data/train.bin"));
const TEST: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/data/test.bin"));

/// The bundled subset: 2,000 training and 500 test images of CIFAR-10's ten classes, 32x32.
pub fn bundled_cifar10() -> Split {
    let classes: Vec<String> = crate::cifar10::CLASSES.map(String::from).to_vec();
    let (mut train, mut test) = (empty(&classes), empty(&classes));
    // the files are part of the source tree, checked by the tests: a failure is a build defect
    CIFAR10
        .parse_records(TRAIN, "web/data/train.bin", &mut train)
        .expect("bundled training images");
    CIFAR10
        .parse_records(TEST, "web/data/test.bin", &mut test)
        .expect("bundled test images");
    Split { train, test }
}
