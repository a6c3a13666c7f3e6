//! `resnet train --resume DIR` continues any run with nothing else on the command line: a new
//! run records the options it was given in `DIR/command.json`, and a resume takes them from
//! there. `--epochs` extends the run; options of the machine rather than the run (adapter,
//! kernels, workers, where the data lies, the evaluation batch, the gradient buckets) may
//! change; any other option
//! given with `--resume` must agree with the run's, else one error names it and both values,
//! before any data is loaded.

use super::flags::with_flags;
use clap::ArgMatches;
use resnet::gpu::Precision;
use resnet::{Error, Result};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

/// The file of a run directory that records the options the run was started with.
const COMMAND_FILE: &str = "command.json";

/// Options a resume may change: the length of the run, and how this machine runs it (a data
/// set moved to another path, a smaller evaluation batch, other gradient buckets, which give
/// the same bits; the pretrained weights are not read again). The identity of the run (model,
/// seed, batch) is checked against its checkpoints in any case.
const MAY_CHANGE: [&str; 13] = [
    "epochs",
    "test_only",
    "bucket_mb",
    "backend",
    "kernels",
    "use_deterministic_algorithms",
    "device_index",
    "workers",
    "log_every",
    "data",
    "eval_batch_size",
    "pretrained",
    "pretrained_sha256",
];

/// Options never recorded: where the run is (the resumed directory says it).
const NOT_RECORDED: [&str; 2] = ["out", "resume"];

/// The options given on the command line, by clap id, with their values as given (paths of
/// local files made absolute, so that a resume from another directory finds them).
type Given = BTreeMap<String, Vec<String>>;

/// The `train` subcommand's definition, built (global options included).
pub fn train_command() -> clap::Command {
    let mut cli = <super::Cli as clap::CommandFactory>::command();
    cli.build();
    cli.find_subcommand("train")
        .expect("the train command")
        .clone()
}

/// The options `m` (matches of `train`) was given on the command line.
fn given(train: &clap::Command, m: &ArgMatches) -> Given {
    let mut out = Given::new();
    for arg in train.get_arguments() {
        let id = arg.get_id().as_str();
        if m.value_source(id) != Some(clap::parser::ValueSource::CommandLine)
            || NOT_RECORDED.contains(&id)
        {
            continue;
        }
        let Ok(Some(raw)) = m.try_get_raw(id) else {
            continue;
        };
        let values = raw.map(|v| absolute(id, v.to_string_lossy().into_owned()));
        out.insert(id.to_string(), values.collect());
    }
    canonical_precision(&mut out);
    canonical_schedule(&mut out);
    canonical_opt(&mut out);
    out
}

/// An optimizer is recorded by its lower-case name, and torchvision's `sgd_nesterov` as `sgd`
/// with `--nesterov`, so that a run and its resume agree however each spelled it.
fn canonical_opt(out: &mut Given) {
    let Some(values) = out.get_mut("opt") else {
        return;
    };
    let mut nesterov = false;
    for v in values.iter_mut() {
        if let Ok((rule, with_nesterov)) = resnet::ops::sgd::Rule::parse(v) {
            *v = rule.name().to_string();
            nesterov |= with_nesterov;
        }
    }
    if nesterov {
        out.insert("nesterov".into(), vec!["true".into()]);
    }
}

/// A schedule is recorded by its canonical name (torchvision's `cosineannealinglr` is `cosine`,
/// in any case), so that a run and its resume agree however each spelled it; `steplr` stays
/// itself: it brings its own period (30 epochs), which `step` does not.
fn canonical_schedule(out: &mut Given) {
    if let Some(values) = out.get_mut("lr_schedule") {
        for v in values.iter_mut() {
            *v = match resnet::train::LrSchedule::parse(v) {
                _ if v.eq_ignore_ascii_case("steplr") => "steplr".to_string(),
                Ok(schedule) => schedule.name().to_string(),
                Err(_) => v.clone(),
            };
        }
    }
}

/// `--amp` is `--precision mixed`, and a precision is recorded by its canonical name (`amp` is
/// `mixed`), so that a run and its resume agree however each spelled it. `--amp` beside another
/// precision is left as given: that contradiction is an error of its own.
fn canonical_precision(out: &mut Given) {
    let canonical = |v: &str| Precision::parse(v).map_or(v.to_string(), |p| p.name().to_string());
    if let Some(values) = out.get_mut("precision") {
        for v in values.iter_mut() {
            *v = canonical(v);
        }
    }
    let amp = out
        .get("amp")
        .is_some_and(|v| v.iter().all(|x| x == "true"));
    let mixed = Precision::Mixed.name().to_string();
    if amp
        && out
            .get("precision")
            .is_none_or(|p| p.len() == 1 && p[0] == mixed)
    {
        out.remove("amp");
        out.insert("precision".into(), vec![mixed]);
    }
}

/// `value` of option `id`, absolute where it names a local file or folder.
fn absolute(id: &str, value: String) -> String {
    let path = Path::new(&value);
    match ["data", "pretrained"].contains(&id) && path.exists() {
        true => std::path::absolute(path).map_or(value, |p| p.display().to_string()),
        false => value,
    }
}

/// Records the options of a new run in `dir` (created if needed), atomically.
pub fn record(dir: &Path, m: &ArgMatches) -> Result<()> {
    let json = serde_json::to_string_pretty(&given(&train_command(), m))
        .map_err(|e| Error::Invalid(format!("{COMMAND_FILE}: {e}")))?;
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Invalid(format!("`out` {}: {e}", dir.display())))?;
    let path = dir.join(COMMAND_FILE);
    resnet::files::write_atomic(&path, json.as_bytes()).map_err(Error::Invalid)
}

/// The `train` command line that continues the run in `dir`: its recorded options, with those
/// given now that may change, and `--resume DIR`. `None` for a run recorded before
/// command.json existed (it resumes with the options given now, as then). `m` is what was
/// given now; returns the matches to run.
pub fn resumed(dir: &Path, m: &ArgMatches) -> Result<Option<ArgMatches>> {
    let train = &train_command();
    let path = dir.join(COMMAND_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    let recorded: Given = serde_json::from_str(&text)
        .map_err(|e| Error::Invalid(format!("{}: not a recorded command ({e})", path.display())))?;
    let now = given(train, m);
    let mut merged = recorded.clone();
    for (id, values) in &now {
        if MAY_CHANGE.contains(&id.as_str()) {
            merged.insert(id.clone(), values.clone());
        }
    }
    // kernels chosen now replace the run's way of choosing them
    if now.contains_key("kernels") && !now.contains_key("use_deterministic_algorithms") {
        merged.remove("use_deterministic_algorithms");
    }
    let mut argv = vec![OsString::from("train")];
    argv.extend(tokens(train, &merged)?);
    argv.extend([OsString::from("--resume"), dir.as_os_str().to_owned()]);
    let resumed = train
        .clone()
        .try_get_matches_from(&argv)
        .map_err(|e| Error::Invalid(format!("{}: {}", path.display(), first_line(&e))))?;
    check_agrees(dir, (train, &now), &resumed)?;
    Ok(Some(resumed))
}

/// Each option given now that may not change has the run's value (recorded, or its default).
fn check_agrees(
    dir: &Path,
    (train, now): (&clap::Command, &Given),
    run: &ArgMatches,
) -> Result<()> {
    let recorded = given(train, run);
    for (id, values) in now {
        if MAY_CHANGE.contains(&id.as_str()) {
            continue;
        }
        let theirs = recorded.get(id).cloned().unwrap_or_else(|| raw(run, id));
        if !same_values(values, &theirs) {
            let theirs = match theirs.is_empty() {
                true => "(not set)".to_string(),
                false => theirs.join(","),
            };
            return Err(Error::Invalid(with_flags(&format!(
                "`resume` {}: `{id}` {} differs from the run's {theirs} (leave it out to continue the run as it was)",
                dir.display(),
                values.join(","),
            ))));
        }
    }
    Ok(())
}

/// Whether two options' values are the same: as numbers where both are (`1e-4` is `0.0001`),
/// else as text.
fn same_values(a: &[String], b: &[String]) -> bool {
    let same = |x: &String, y: &String| match (x.parse::<f64>(), y.parse::<f64>()) {
        (Ok(p), Ok(q)) => p == q,
        _ => x == y,
    };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
}

/// The values of `id` in `m` as clap holds them (defaults included).
fn raw(m: &ArgMatches, id: &str) -> Vec<String> {
    match m.try_get_raw(id) {
        Ok(Some(v)) => v.map(|s| s.to_string_lossy().into_owned()).collect(),
        _ => Vec::new(),
    }
}

/// `--flag value` tokens for `options`, as `train` parses them.
fn tokens(train: &clap::Command, options: &Given) -> Result<Vec<OsString>> {
    let mut out = Vec::new();
    for (id, values) in options {
        let Some(arg) = train.get_arguments().find(|a| a.get_id() == id.as_str()) else {
            return Err(Error::Invalid(format!(
                "{COMMAND_FILE}: unknown option '{id}'"
            )));
        };
        let Some(long) = arg.get_long() else { continue };
        if matches!(arg.get_action(), clap::ArgAction::SetTrue) {
            // a switch: recorded as "true" when it was given
            if values.iter().all(|v| v == "true") {
                out.push(OsString::from(format!("--{long}")));
            }
            continue;
        }
        // `--flag=value`: a value that starts with '-' stays a value
        let delimiter = arg.get_value_delimiter().unwrap_or(',');
        let joined = values.join(&delimiter.to_string());
        out.push(OsString::from(format!("--{long}={joined}")));
    }
    Ok(out)
}

fn first_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let line = rendered
        .lines()
        .next()
        .unwrap_or("invalid recorded options");
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given_to(args: &[&str]) -> Given {
        let train = train_command();
        let m = train
            .clone()
            .try_get_matches_from([&["train"], args].concat())
            .unwrap();
        given(&train, &m)
    }

    #[test]
    fn amp_and_mixed_precision_are_one_choice() {
        let mixed = given_to(&["--precision", "mixed"]);
        assert_eq!(mixed.get("precision"), Some(&vec!["mixed".to_string()]));
        assert_eq!(given_to(&["--amp"]), mixed);
        assert_eq!(given_to(&["--precision", "AMP"]), mixed);
        assert_eq!(given_to(&["--amp", "--precision", "mixed"]), mixed);
        let fp32 = given_to(&["--precision", "float32"]);
        assert_eq!(fp32.get("precision"), Some(&vec!["fp32".to_string()]));
        // a contradiction stays as given, for its own error
        let both = given_to(&["--amp", "--precision", "fp32"]);
        assert!(both.contains_key("amp") && both["precision"] == ["fp32"]);
    }

    /// torchvision's scheduler names (any case, through `--lr-scheduler`) are recorded as the
    /// schedules they are, under the one id; `steplr` is not `step` (it brings its period).
    #[test]
    fn torchvisions_scheduler_names_are_their_schedules() {
        let cosine = given_to(&["--lr-schedule", "cosine"]);
        assert_eq!(cosine.get("lr_schedule"), Some(&vec!["cosine".to_string()]));
        assert_eq!(given_to(&["--lr-scheduler", "CosineAnnealingLR"]), cosine);
        let exponential = given_to(&["--lr-schedule", "exponential"]);
        assert_eq!(given_to(&["--lr-scheduler", "exponentiallr"]), exponential);
        let steplr = given_to(&["--lr-scheduler", "StepLR"]);
        assert_eq!(steplr.get("lr_schedule"), Some(&vec!["steplr".to_string()]));
        assert_ne!(steplr, given_to(&["--lr-schedule", "step"]));
    }

    /// An optimizer is recorded lower-case, and `sgd_nesterov` as `sgd` with `--nesterov`.
    #[test]
    fn optimizer_names_are_recorded_as_one_spelling() {
        let rmsprop = given_to(&["--opt", "rmsprop"]);
        assert_eq!(rmsprop.get("opt"), Some(&vec!["rmsprop".to_string()]));
        assert_eq!(given_to(&["--opt", "RMSprop"]), rmsprop);
        let nesterov = given_to(&["--opt", "sgd", "--nesterov"]);
        assert_eq!(given_to(&["--opt", "SGD_Nesterov"]), nesterov);
        assert_ne!(given_to(&["--opt", "sgd"]), nesterov);
    }
}
