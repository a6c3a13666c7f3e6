//! Training reports: the metrics CSV round trip and the PNG plots (decoded and checked).

use std::path::Path;

use resnet::report::{self, EpochMetrics, Panel, Series};

/// Plausible training curves: loss and error falling, a learning-rate drop at epoch 20.
fn rows(n: usize) -> Vec<EpochMetrics> {
    (1..=n)
        .map(|e| {
            let t = e as f64;
            let drop = if e > 20 { 0.5 } else { 1.0 };
            EpochMetrics {
                epoch: e,
                iteration: 391 * e as u64,
                lr: if e > 20 { 0.01 } else { 0.1 },
                train_loss: 2.3 * (-t / 8.0).exp() * drop + 0.05,
                train_acc: 1.0 - 0.9 * (-t / 6.0).exp() * drop - 0.01,
                test_loss: 2.3 * (-t / 9.0).exp() * drop + 0.3,
                test_acc: 1.0 - 0.9 * (-t / 7.0).exp() * drop - 0.08,
                images_per_sec: 1234.5 + t,
                seconds: 40.0 + 1.0 / 3.0,
                exchange_ms: 2.5 + t,
                exchange_hidden_ms: 1.25 + t,
                loss_scale: (e % 2 == 0).then_some(65536.0 / e as f64),
                skipped_steps: e as u64 / 2,
                ema_test_loss: (e % 3 == 0).then_some(0.25 + t / 64.0),
                ema_test_acc: (e % 3 == 0).then_some(0.5 + t / 128.0),
                test_acc5: (e != 2).then_some(1.0 - 0.5 * (-t / 7.0).exp() * drop),
                ema_test_acc5: (e % 3 == 0).then_some(0.75 + t / 256.0),
                train_acc5: (e != 1).then_some(0.9 - t / 512.0),
            }
        })
        .collect()
}

#[test]
fn metrics_csv_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.csv");
    let mut want = rows(5);
    want[2].lr = 1e-7;
    want[3].test_loss = f64::NAN;
    for r in &want {
        report::append_metrics(&path, r).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().next(), Some(report::CSV_HEADER));
    assert_eq!(text.lines().count(), 6, "one header, five rows:\n{text}");
    let got = report::read_metrics(&path).unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        let same = |a: f64, b: f64| a == b || (a.is_nan() && b.is_nan());
        assert_eq!((g.epoch, g.iteration), (w.epoch, w.iteration));
        assert!(same(g.lr, w.lr) && same(g.train_loss, w.train_loss));
        assert!(same(g.train_acc, w.train_acc) && same(g.test_loss, w.test_loss));
        assert!(same(g.test_acc, w.test_acc) && same(g.images_per_sec, w.images_per_sec));
        assert!(same(g.seconds, w.seconds));
        assert_eq!(
            (g.exchange_ms, g.exchange_hidden_ms),
            (w.exchange_ms, w.exchange_hidden_ms)
        );
        // fp32 rows leave the loss scale empty; mixed ones carry it and the skipped steps
        assert_eq!(
            (g.loss_scale, g.skipped_steps),
            (w.loss_scale, w.skipped_steps)
        );
        // rows without a moving average leave its columns empty
        assert_eq!(
            (g.ema_test_loss, g.ema_test_acc),
            (w.ema_test_loss, w.ema_test_acc)
        );
        assert_eq!(
            (g.test_acc5, g.ema_test_acc5, g.train_acc5),
            (w.test_acc5, w.ema_test_acc5, w.train_acc5)
        );
    }

    // A row cut by a crash does not swallow the next one; read errors name file and line.
    let mut cut = text.clone();
    cut.truncate(cut.len() - 40);
    std::fs::write(&path, &cut).unwrap();
    report::append_metrics(&path, &want[0]).unwrap();
    let m = report::read_metrics(&path).unwrap_err().to_string();
    assert!(
        m.contains(&path.display().to_string()) && m.contains("line 6"),
        "{m}"
    );
    assert!(!m.contains('\n'));

    // A file that is not ours is not appended to.
    let other = dir.path().join("other.csv");
    std::fs::write(&other, "a,b,c\n1,2,3\n").unwrap();
    assert!(report::append_metrics(&other, &want[0]).is_err());
    assert_eq!(std::fs::read_to_string(&other).unwrap(), "a,b,c\n1,2,3\n");
}

/// metrics.csv of a run trained before the exchange's columns existed still reads (a resume
/// rewrites it with them), those columns 0.
#[test]
fn metrics_csv_without_the_exchange_columns_reads_as_no_exchange() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.csv");
    let old = "epoch,iteration,lr,train_loss,train_acc,test_loss,test_acc,images_per_sec,seconds\n\
               1,391,0.1,1.5,0.45,1.25,0.55,1000,60.5\n";
    std::fs::write(&path, old).unwrap();
    let got = report::read_metrics(&path).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].iteration, got[0].test_acc, got[0].seconds),
        (391, 0.55, 60.5)
    );
    assert_eq!((got[0].exchange_ms, got[0].exchange_hidden_ms), (0.0, 0.0));
}

/// metrics.csv of a run trained before the loss scale's columns existed reads with an empty
/// scale and no skipped steps.
#[test]
fn metrics_csv_without_the_loss_scale_columns_reads_as_fp32() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.csv");
    let old = "epoch,iteration,lr,train_loss,train_acc,test_loss,test_acc,images_per_sec,seconds,exchange_ms,exchange_hidden_ms\n\
               2,782,0.1,1.25,0.55,1.125,0.6,900,61.5,2.5,1.5\n";
    std::fs::write(&path, old).unwrap();
    let got = report::read_metrics(&path).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].iteration, got[0].exchange_hidden_ms), (782, 1.5));
    assert_eq!((got[0].loss_scale, got[0].skipped_steps), (None, 0));
}

/// metrics.csv of a run trained before the moving average's columns existed reads with them
/// empty.
#[test]
fn metrics_csv_without_the_moving_average_columns_reads_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.csv");
    let old = "epoch,iteration,lr,train_loss,train_acc,test_loss,test_acc,images_per_sec,seconds,exchange_ms,exchange_hidden_ms,loss_scale,skipped_steps\n\
               3,900,0.1,1.25,0.55,1.125,0.6,900,61.5,2.5,1.5,1024,2\n";
    std::fs::write(&path, old).unwrap();
    let got = report::read_metrics(&path).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].loss_scale, got[0].skipped_steps), (Some(1024.0), 2));
    assert_eq!((got[0].ema_test_loss, got[0].ema_test_acc), (None, None));
}

/// metrics.csv of a run trained before the top-5 column existed reads with it empty.
#[test]
fn metrics_csv_without_the_top5_column_reads_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.csv");
    let old = "epoch,iteration,lr,train_loss,train_acc,test_loss,test_acc,images_per_sec,seconds,exchange_ms,exchange_hidden_ms,loss_scale,skipped_steps,ema_test_loss,ema_test_acc\n\
               3,900,0.1,1.25,0.55,1.125,0.6,900,61.5,2.5,1.5,,0,1.5,0.5\n";
    std::fs::write(&path, old).unwrap();
    let got = report::read_metrics(&path).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].ema_test_acc, got[0].test_acc5), (Some(0.5), None));
    assert_eq!((got[0].ema_test_acc5, got[0].train_acc5), (None, None));
}

/// metrics.csv of a run trained before the training top-5 column existed reads with it empty.
#[test]
fn metrics_csv_without_the_training_top5_column_reads_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.csv");
    let old = "epoch,iteration,lr,train_loss,train_acc,test_loss,test_acc,images_per_sec,seconds,exchange_ms,exchange_hidden_ms,loss_scale,skipped_steps,ema_test_loss,ema_test_acc,test_acc5,ema_test_acc5\n\
               3,900,0.1,1.25,0.55,1.125,0.6,900,61.5,2.5,1.5,,0,,,0.875,\n";
    std::fs::write(&path, old).unwrap();
    let got = report::read_metrics(&path).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].test_acc5, got[0].train_acc5), (Some(0.875), None));
}

/// Decodes a PNG and checks its size and that it is neither blank nor a single colour.
fn check_png(path: &Path, size: (u32, u32)) -> image::RgbImage {
    let img = image::open(path).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), size);
    let first = *img.get_pixel(0, 0);
    let differing = img.pixels().filter(|p| **p != first).count();
    assert!(
        differing > 1000,
        "only {differing} pixels differ from the background"
    );
    let coloured = img
        .pixels()
        .filter(|p| p.0.iter().max().unwrap() - p.0.iter().min().unwrap() > 60)
        .count();
    assert!(
        coloured > 200,
        "lines in colour expected, {coloured} coloured pixels"
    );
    img
}

#[test]
fn curves_png() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("curves.png");
    report::plot_curves(&rows(40), &png).unwrap();
    check_png(&png, (1200, 480));
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "no temporary file left behind");
    if let Ok(keep) = std::env::var("RESNET_KEEP_PLOTS") {
        std::fs::copy(&png, Path::new(&keep).join("curves.png")).unwrap();
    }
    if !report::text_available() {
        eprintln!("note: no font found, the plot was drawn without text (apt-get install fonts-dejavu-core)");
    }
}

#[test]
fn panels_png_with_and_without_text() {
    let dir = tempfile::tempdir().unwrap();
    let sq = |k: f64| {
        (0..50)
            .map(move |i| (i as f64, (i as f64 * k).sin()))
            .collect()
    };
    let panels: Vec<Panel> = (0..4)
        .map(|p| Panel {
            title: format!("panel {p}"),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![
                Series {
                    name: "thin".into(),
                    points: sq(0.1 + p as f64 * 0.05),
                    bold: false,
                },
                Series {
                    name: "bold".into(),
                    points: sq(0.2),
                    bold: true,
                },
                // Degenerate inputs must not fail: a single point and a non-finite value.
                Series {
                    name: "one point".into(),
                    points: vec![(3.0, 0.5), (f64::NAN, 1.0)],
                    bold: false,
                },
            ],
        })
        .collect();
    let png = dir.path().join("panels.png");
    report::plot_panels(&panels, &png, (900, 600)).unwrap();
    check_png(&png, (900, 600));
    let bare = dir.path().join("bare.png");
    report::plot_panels_without_text(&panels, &bare, (900, 600)).unwrap();
    check_png(&bare, (900, 600));
    if let Ok(keep) = std::env::var("RESNET_KEEP_PLOTS") {
        std::fs::copy(&png, Path::new(&keep).join("panels.png")).unwrap();
        std::fs::copy(&bare, Path::new(&keep).join("bare.png")).unwrap();
    }

    // An empty panel list, an absurd size or a missing directory are errors naming the file.
    assert!(report::plot_panels(&[], &png, (100, 100)).is_err());
    assert!(report::plot_panels(&panels, &png, (10, 10)).is_err());
    let nowhere = dir.path().join("missing").join("x.png");
    let m = report::plot_panels(&panels, &nowhere, (300, 200))
        .unwrap_err()
        .to_string();
    assert!(m.contains(&nowhere.display().to_string()), "{m}");
}
