//! Activations stored in f16: every shader that reads or writes activations declares them as
//! `array<act_t>` under `alias act_t = f32;`, converting to f32 where it loads and back where it
//! stores, so that in f32 every conversion is the identity (the same bits as without the alias).
//! `module` gives a shader module with that alias set to f16: the same kernels reading and
//! writing half the bytes and computing in f32 between load and store, as PyTorch's autocast
//! stores activations in f16 and accumulates in f32.
//!
//! Which module a kernel comes from follows the tensors it binds (`of`): f16 activations take
//! the f16 module. The convolution shaders have three such aliases, one per binding whose type
//! differs between their kernels (`CONV_FORWARD`, `CONV_WEIGHTS`).

use super::derived;
use crate::gpu::{Dtype, Tensor};

/// The aliases of f16 activations in every shader but the convolutions'.
const ACTIVATIONS: F16Set = F16Set {
    aliases: &["act_t"],
    tag: "act16",
};

/// The convolutions' forward and backward to the input: x or dy (`act_t`) in, y or dx
/// (`out_t`) out, in f16; the weights and the BatchNorm parameters they read in f32.
pub(crate) const CONV_FORWARD: F16Set = F16Set {
    aliases: &["act_t", "out_t"],
    tag: "fwd16",
};

/// The convolutions' backward to the weights and the bias: dy (`a_t`) and x (`act_t`) in f16,
/// the partial sums they write in f32.
pub(crate) const CONV_WEIGHTS: F16Set = F16Set {
    aliases: &["act_t", "a_t"],
    tag: "dw16",
};

/// Which type aliases of a shader a module sets to f16, and the tag its name gets.
#[derive(Clone, Copy)]
pub(crate) struct F16Set {
    aliases: &'static [&'static str],
    tag: &'static str,
}

/// The element type of the activations among `tensors`: f16 if any of them is f16.
pub(crate) fn of<'t>(tensors: impl IntoIterator<Item = &'t Tensor>) -> Dtype {
    match tensors.into_iter().any(|t| t.dtype == Dtype::F16) {
        true => Dtype::F16,
        false => Dtype::F32,
    }
}

/// `(name, source)` as it is for f32 activations; for f16 ones, the module with `act_t` set to
/// f16 under its own name (`name` + `#act16`, so the device's module cache keeps both), built
/// once per process.
pub(crate) fn module(m: (&'static str, &'static str), act: Dtype) -> (&'static str, &'static str) {
    match act {
        Dtype::F32 => m,
        Dtype::F16 => module_with(m, ACTIVATIONS),
    }
}

/// The module of `(name, source)` with the aliases of `set` in f16, named `name#tag`.
pub(crate) fn module_with(
    m: (&'static str, &'static str),
    set: F16Set,
) -> (&'static str, &'static str) {
    derived::module(m, set.tag, |name, source| f16_source(name, source, set))
}

/// `source` with the aliases of `set` in f16.
fn f16_source(name: &str, source: &str, set: F16Set) -> String {
    let mut f16 = source.to_string();
    for alias in set.aliases {
        let line = format!("alias {alias} = f32;");
        f16 = derived::replace_line(name, &f16, &line, &format!("alias {alias} = f16;"));
    }
    match f16.starts_with("enable f16;") {
        true => f16,
        false => format!("enable f16;\n{f16}"),
    }
}

/// Whether `file` is a module of f16 activations (the only ones f16 tensors may bind to).
pub(crate) fn is_f16_module(file: &str) -> bool {
    [ACTIVATIONS, CONV_FORWARD, CONV_WEIGHTS]
        .iter()
        .any(|set| derived::has_tag(file, set.tag))
}

/// Every module of f16 activations a shader module `(name, source)` has, for validation: the
/// convolutions' two, one for any other shader with activations, none for one without.
pub fn f16_modules(m: (&'static str, &'static str)) -> Vec<(&'static str, &'static str)> {
    if m.1.contains("alias out_t = f32;") {
        return vec![module_with(m, CONV_FORWARD), module_with(m, CONV_WEIGHTS)];
    }
    match m.1.contains("alias act_t = f32;") {
        true => vec![module_with(m, ACTIVATIONS)],
        false => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_f16_module_sets_the_alias_and_enables_f16_once() {
        let src = "alias act_t = f32;\nfn f() {}\n";
        let (name, f16) = module(
            ("t.wgsl", Box::leak(src.to_string().into_boxed_str())),
            Dtype::F16,
        );
        assert_eq!(name, "t.wgsl#act16");
        assert_eq!(f16, "enable f16;\nalias act_t = f16;\nfn f() {}\n");
        let already = f16_source("u", "enable f16;\nalias act_t = f32;\n", ACTIVATIONS);
        assert_eq!(already.matches("enable f16;").count(), 1);
        assert_eq!(module(("t.wgsl", "x"), Dtype::F32), ("t.wgsl", "x"));
    }

    #[test]
    fn the_convolutions_get_a_module_per_set_of_aliases() {
        let src = "alias act_t = f32;\nalias out_t = f32;\nalias a_t = f32;\n";
        let conv = f16_source("c", src, CONV_FORWARD);
        assert!(
            conv.contains("act_t = f16")
                && conv.contains("out_t = f16")
                && conv.contains("a_t = f32")
        );
        let dw = f16_source("c", src, CONV_WEIGHTS);
        assert!(
            dw.contains("act_t = f16") && dw.contains("out_t = f32") && dw.contains("a_t = f16")
        );
        assert!(is_f16_module("conv2d.wgsl#dw16") && is_f16_module("conv2d.wgsl#fwd16"));
        assert!(is_f16_module("pool.wgsl#act16") && !is_f16_module("conv2d.wgsl"));
    }

    #[test]
    #[should_panic(expected = "needs its shader's")]
    fn a_shader_without_the_alias_fails_loudly() {
        f16_source("t.wgsl", "fn f() {}\n", ACTIVATIONS);
    }
}
