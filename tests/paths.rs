//! Every file path the documentation and the code comments name exists in the repository:
//! README.md, BENCHMARKS.md and docs/*.md (all their text), the `//` comments of the Rust files
//! under src/, tests/, benches/, examples/ and web/src/, and of shaders/*.wgsl. Pure file reading,
//! no GPU.
//!
//! A path is a token that starts with a top-level directory of the repository (`src/...`,
//! `shaders/...`, ...), or that has a `/` and a file extension and starts with a name present
//! beside the citing file or above it (`common/cli.rs` from tests/), or that starts with `../`, or
//! a bare Markdown or WGSL file name (`BENCHMARKS.md`, `conv2d_gemm.wgsl`). It resolves from the
//! citing file's directory or any directory above it up to the repository root (bare `.md` names
//! from docs/ too, bare `.wgsl` names from shaders/), and never outside the repository. Skipped:
//! URLs, `~/`, absolute paths, `$VAR/...`, `runs/...`, placeholders (`<class>`, `*`, `{g}`), what
//! .gitignore ignores (build outputs), and names of user data (`my_plants/train/...`, whose first
//! name is nothing in the repository).

use std::path::{Component, Path, PathBuf};

/// Extensions of the files a path with a `/` may name.
const EXTENSIONS: &[&str] = &[
    "rs", "wgsl", "md", "sh", "py", "toml", "json", "html", "js", "mjs", "css", "png", "csv", "txt",
];

/// Top-level entries of the repository: a token starting with one of them is a path.
const TOP: &[&str] = &[
    "src", "shaders", "tests", "docs", "scripts", "web", "benches", "examples", ".ci",
];

/// Places outside the repository the text names on purpose (the full CIFAR-10 set beside it).
const OUTSIDE: &[&str] = &["../shared/data"];

/// A path named at a line of a file that does not resolve.
#[derive(Debug)]
struct Dangling {
    file: String,
    line: usize,
    path: String,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The comment of a line of Rust or WGSL (after a `//` outside a string or char literal).
fn comment(line: &str) -> Option<&str> {
    let b = line.as_bytes();
    let (mut i, mut in_str) = (0, false);
    while i < b.len() {
        match b[i] {
            b'\\' if in_str => i += 1,
            b'"' => in_str = !in_str,
            // a char literal: 'x' or '\x'
            b'\'' if !in_str => {
                if b.get(i + 2) == Some(&b'\'') {
                    i += 2;
                } else if b.get(i + 1) == Some(&b'\\') && b.get(i + 3) == Some(&b'\'') {
                    i += 3;
                }
            }
            b'/' if !in_str && b.get(i + 1) == Some(&b'/') => return Some(&line[i + 2..]),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Path-like tokens of a piece of text, cleaned of punctuation, line numbers and anchors;
/// URLs, home, absolute, variable, run and placeholder paths left out.
fn tokens(text: &str) -> Vec<&str> {
    text.split(|c: char| c.is_whitespace() || "`\"'()[],;|=!".contains(c))
        .filter(|t| !t.contains("://"))
        .map(|t| t.split([':', '#']).next().unwrap_or(""))
        .map(|t| t.trim_end_matches(['.', '?']))
        // Markdown's bold
        .map(|t| t.trim_start_matches("**").trim_end_matches("**"))
        .map(|t| t.strip_prefix("./").unwrap_or(t))
        .filter(|t| !t.is_empty())
        .filter(|t| !t.starts_with(['~', '/', '-']) && !t.starts_with("runs/"))
        .filter(|t| !t.contains(['<', '>', '*', '{', '}', '%', '$', '\\']))
        .collect()
}

fn extension(t: &str) -> Option<&str> {
    let name = t.trim_end_matches('/').rsplit('/').next()?;
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty() && EXTENSIONS.contains(&ext)).then_some(ext)
}

/// `base/t` with `.` and `..` resolved lexically; None where it leaves `root`.
fn join_within(root: &Path, base: &Path, t: &str) -> Option<PathBuf> {
    let mut parts: Vec<String> = base
        .strip_prefix(root)
        .ok()?
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    for c in Path::new(t).components() {
        match c {
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    Some(parts.iter().fold(root.to_path_buf(), |p, n| p.join(n)))
}

/// The repository's ignored paths (.gitignore's plain entries: build outputs), relative to the root.
fn ignored(root: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(root.join(".gitignore")).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.contains(['*', '?', '[', '!']))
        .map(|l| l.trim_matches('/').to_string())
        .collect()
}

/// The paths named in `lines` of `file` (relative to `root`) that do not resolve.
fn check(
    root: &Path,
    file: &str,
    lines: &[(usize, &str)],
    ignored: &[String],
) -> (usize, Vec<Dangling>) {
    let dir = root.join(file).parent().unwrap().to_path_buf();
    // the citing file's directory and every directory above it up to the root
    let bases: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|a| a.starts_with(root))
        .map(Path::to_path_buf)
        .collect();
    let mut checked = 0;
    let mut dangling = Vec::new();
    for &(line, text) in lines {
        for t in tokens(text) {
            let first = t.split('/').next().unwrap_or("");
            let cited = match t.contains('/') {
                true => {
                    TOP.contains(&first)
                        || first == ".."
                        || (extension(t).is_some() && bases.iter().any(|b| b.join(first).exists()))
                }
                false => matches!(extension(t), Some("md" | "wgsl")),
            };
            let is_ignored = |p: &str| {
                ignored
                    .iter()
                    .any(|i| p == i || p.starts_with(&format!("{i}/")))
            };
            if !cited
                || is_ignored(t.trim_end_matches('/'))
                || OUTSIDE.contains(&t.trim_end_matches('/'))
            {
                continue;
            }
            checked += 1;
            let mut from = bases.clone();
            match extension(t) {
                Some("md") if !t.contains('/') => from.push(root.join("docs")),
                Some("wgsl") if !t.contains('/') => from.push(root.join("shaders")),
                _ => {}
            }
            let found = from
                .iter()
                .filter_map(|b| join_within(root, b, t))
                .any(|p| p.exists());
            if !found {
                dangling.push(Dangling {
                    file: file.to_string(),
                    line,
                    path: t.to_string(),
                });
            }
        }
    }
    (checked, dangling)
}

/// Files under `dir` (relative to the root) whose extension is `ext`, recursively.
fn files(root: &Path, dir: &str, ext: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
        return;
    };
    let mut entries: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        let rel = p
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if p.is_dir() {
            files(root, &rel, ext, out);
        } else if p.extension().is_some_and(|e| e == ext) {
            out.push(rel);
        }
    }
}

#[test]
fn every_path_named_in_the_docs_and_comments_exists() {
    let root = root();
    let ignored = ignored(&root);
    let mut docs = vec!["README.md".to_string(), "BENCHMARKS.md".to_string()];
    files(&root, "docs", "md", &mut docs);
    let mut code = Vec::new();
    for dir in ["src", "tests", "benches", "examples", "web/src"] {
        files(&root, dir, "rs", &mut code);
    }
    files(&root, "shaders", "wgsl", &mut code);
    assert!(code.len() > 50, "too few source files found: {code:?}");

    let (mut checked, mut dangling) = (0, Vec::new());
    for (file, whole) in docs
        .iter()
        .map(|f| (f, true))
        .chain(code.iter().map(|f| (f, false)))
    {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let lines: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .filter_map(|(i, l)| match whole {
                true => Some((i + 1, l)),
                false => comment(l).map(|c| (i + 1, c)),
            })
            .collect();
        let (n, d) = check(&root, file, &lines, &ignored);
        checked += n;
        dangling.extend(d);
    }
    println!(
        "{checked} paths checked in {} files",
        docs.len() + code.len()
    );
    assert!(
        checked > 100,
        "only {checked} paths found: is the scan broken?"
    );
    let report: Vec<String> = dangling
        .iter()
        .map(|d| {
            format!(
                "{}:{}: `{}` is not in the repository",
                d.file, d.line, d.path
            )
        })
        .collect();
    assert!(
        report.is_empty(),
        "{} dangling paths:\n{}",
        report.len(),
        report.join("\n")
    );
}

#[test]
fn finds_repository_paths_and_skips_the_rest() {
    let line = "see `src/ops/mod.rs:12`, [BENCHMARKS.md](BENCHMARKS.md) and web/test.sh. Not \
                https://wgpu.rs/x.md, ~/.cache/k.json, /tmp/a.rs, $OUT/b.png, runs/r/metrics.csv, \
                my_plants/train/<class>/*, images/s or conv2d.wgsl's {g}.rs, **docs/**.";
    assert_eq!(
        tokens(line)
            .into_iter()
            .filter(|t| t.contains('/') || extension(t).is_some())
            .collect::<Vec<_>>(),
        [
            "src/ops/mod.rs",
            "BENCHMARKS.md",
            "BENCHMARKS.md",
            "web/test.sh",
            "images/s",
            "conv2d.wgsl",
            "docs/"
        ]
    );
    assert_eq!(
        comment(r#"let u = "https://x.rs/a.rs"; // see src/lib.rs"#),
        Some(" see src/lib.rs")
    );
    assert_eq!(comment(r#"s.split('"').count() // one"#), Some(" one"));
    assert_eq!(comment(r#"let u = "a//b";"#), None);
}

#[test]
fn a_missing_path_fails_naming_file_line_and_path() {
    let root = root();
    let lines = [
        (3, "as src/ops/mod.rs says"),
        (7, "see `src/ops/no_such_op.rs` and **tests/paths.rs**"),
        (9, "(../shared/NOTES.md, principle 4; NOTES.md)"),
        (
            11,
            "common/no_such_helper.rs, but user data train/cat/1.png is skipped",
        ),
    ];
    let (checked, dangling) = check(&root, "tests/fake.rs", &lines, &[]);
    assert_eq!(checked, 6);
    let got: Vec<(usize, &str)> = dangling.iter().map(|d| (d.line, d.path.as_str())).collect();
    assert_eq!(
        got,
        [
            (7, "src/ops/no_such_op.rs"),
            (9, "../shared/NOTES.md"),
            (9, "NOTES.md"),
            (11, "common/no_such_helper.rs"),
        ]
    );
    assert!(dangling.iter().all(|d| d.file == "tests/fake.rs"));
}
