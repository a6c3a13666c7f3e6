//! `resnet experiment`: every model trains under OUT/NAME/, the figure, CSV and table appear,
//! and a second call skips finished runs (resumes instead of starting over).

mod common;
use common::cifar;
use resnet::train::{self, Experiment, Recipe, Silent, TrainConfig};

#[test]
fn degradation_experiment_writes_figure_table_and_resumes() {
    let dir = cifar::subset(7, 2);
    let split = resnet::data::load(dir.path(), (32, 32)).unwrap();
    let out = tempfile::tempdir().unwrap();
    let base = TrainConfig {
        epochs: Some(1),
        recipe: Recipe {
            batch_size: 32,
            ..Recipe::default()
        },
        subset: Some(64),
        seed: 1,
        eval_batch_size: 20,
        log_every: 1,
        gpu: common::untuned(),
        ..TrainConfig::default()
    };
    let run = |kind, depths: &[usize], config: &TrainConfig, out: &std::path::Path| {
        train::run_experiment((kind, depths), config, (&split, out), &mut Silent)
    };
    let table = run(Experiment::Degradation, &[8], &base, out.path()).unwrap();
    for f in [
        "plain8/metrics.csv",
        "resnet8/last.safetensors",
        "degradation.png",
        "degradation.csv",
        "degradation.md",
    ] {
        assert!(out.path().join(f).exists(), "{f} missing");
    }
    assert!(
        table.contains("| plain8 | 8 |") && table.contains("| resnet8 | 8 |"),
        "{table}"
    );
    let csv = std::fs::read_to_string(out.path().join("degradation.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let png = image::open(out.path().join("degradation.png")).unwrap();
    assert_eq!((png.width(), png.height()), (1200, 500));
    // a second call with two epochs resumes each run at epoch 2 instead of starting over
    let before = std::fs::read_to_string(out.path().join("resnet8/metrics.csv")).unwrap();
    let two_epochs = TrainConfig {
        epochs: Some(2),
        ..base.clone()
    };
    run(Experiment::Degradation, &[8], &two_epochs, out.path()).unwrap();
    let after = std::fs::read_to_string(out.path().join("resnet8/metrics.csv")).unwrap();
    assert!(
        after.starts_with(&before) && after.lines().count() == before.lines().count() + 1,
        "{after}"
    );
    // the thin training curves come from every read-back (log_every 1: every step), not only
    // from the epoch rows
    let curve = std::fs::read_to_string(out.path().join("degradation_train_curve.csv")).unwrap();
    let resnet8_points = curve.lines().filter(|l| l.starts_with("resnet8,")).count();
    assert_eq!(resnet8_points, 4, "2 epochs x 2 steps: {curve}");

    // Table 6: resnet20 beside the paper's 8.75%; a second call with the same epochs trains
    // nothing (the finished run is skipped) and writes the same table
    let depth_out = tempfile::tempdir().unwrap();
    let table = run(Experiment::Depth, &[20], &base, depth_out.path()).unwrap();
    assert!(table.contains("| resnet20 | 20 | 0.27M | 1 |"), "{table}");
    assert!(table.trim_end().ends_with("| 8.75 |"), "{table}");
    let metrics = depth_out.path().join("resnet20/metrics.csv");
    let weights = depth_out.path().join("resnet20/last.safetensors");
    let (m1, w1) = (
        std::fs::read(&metrics).unwrap(),
        std::fs::read(&weights).unwrap(),
    );
    let again = run(Experiment::Depth, &[20], &base, depth_out.path()).unwrap();
    assert_eq!(again, table);
    assert_eq!(
        std::fs::read(&metrics).unwrap(),
        m1,
        "a finished run was trained again"
    );
    assert_eq!(
        std::fs::read(&weights).unwrap(),
        w1,
        "a finished run was trained again"
    );

    let e = run(Experiment::Depth, &[21], &base, out.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("resnet21"), "{e}");
}
