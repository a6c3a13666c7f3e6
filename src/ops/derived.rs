//! Shader modules derived from another by editing its source: the modules of f16 activations
//! (`activations`) and the convolutions' BatchNorm-on-load modules (`conv2d`). Each is built once
//! per process and named `name#tag`, so that the device's module and pipeline caches keep it apart
//! from the module it came from; tags compose (`conv2d.wgsl#fwd16#bnin`).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// The module `(name, source)` edited by `edit` (given the name, for its messages, and the
/// source), named `name#tag`.
pub(crate) fn module(
    (name, source): (&'static str, &'static str),
    tag: &'static str,
    edit: impl FnOnce(&str, &str) -> String,
) -> (&'static str, &'static str) {
    type Built = HashMap<(&'static str, &'static str), (&'static str, &'static str)>;
    static BUILT: OnceLock<Mutex<Built>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .expect("not poisoned");
    *built.entry((name, tag)).or_insert_with(|| {
        // a handful of modules, each leaked once: they live as long as the process's pipelines
        let source = Box::leak(edit(name, source).into_boxed_str());
        let name = Box::leak(format!("{name}#{tag}").into_boxed_str());
        (&*name, &*source)
    })
}

/// Whether the module named `file` was derived with `tag`.
pub(crate) fn has_tag(file: &str, tag: &str) -> bool {
    file.split('#').skip(1).any(|t| t == tag)
}

/// `source` with its one line `from` replaced by `to`; a shader without that line is a bug in
/// this crate, reported with the module's name.
pub(crate) fn replace_line(name: &str, source: &str, from: &str, to: &str) -> String {
    assert_eq!(
        source.matches(from).count(),
        1,
        "{name}: a derived module needs its shader's `{from}`"
    );
    source.replace(from, to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_compose_and_are_found() {
        let once = module(("d.wgsl", "const X = false;\n"), "x", |n, s| {
            replace_line(n, s, "const X = false;", "const X = true;")
        });
        assert_eq!(once, ("d.wgsl#x", "const X = true;\n"));
        let twice = module(once, "y", |_, s| format!("// y\n{s}"));
        assert_eq!(twice.0, "d.wgsl#x#y");
        assert!(has_tag(twice.0, "x") && has_tag(twice.0, "y") && !has_tag(twice.0, "z"));
        assert!(!has_tag("x.wgsl", "x"));
    }
}
