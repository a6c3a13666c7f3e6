//! The one expander of the convolution templates (shaders/conv2d.wgsl, shaders/conv2d_gemm.wgsl).
//! A template is plain WGSL, valid as it stands (its constants at one family's values), with two
//! kinds of marked lines:
//!
//! - `const NAME: u32 = ...;` for each NAME among a family's constants becomes
//!   `const NAME: u32 = <value>u;`;
//! - `//%[v<COUNT,w<COUNT2] body` becomes one line per combination of the loop variables' values
//!   (the last varying fastest; COUNT names one of the family's counts), with `{v}`, `{4*v}`,
//!   `{4*v+1}` to `{4*v+3}`, `{2*v}`, `{2*v+1}`, `{v/4}` and `{v%4}` in `body` replaced by the
//!   value, four times it (plus 1 to 3), twice it, twice it plus one, its quotient and its
//!   remainder by 4, and `{#}` by the combination's ordinal (0, 1, ... in that order: the
//!   `case` labels of a `switch` that picks one block's variables in a loop).
//!
//! Per-invocation values are spelled out as named variables this way, never as arrays: a private
//! array indexed in a loop lands in scratch memory on lavapipe and in local memory on NVIDIA's
//! compiler (5-10x slower on both). Epilogues that do much per block (BatchNorm's sums, bounds
//! checks, stores) loop over the blocks instead and pick each one's variables with a `switch` on
//! `{#}`: written out per block, LLVM in lavapipe took up to 19 s to compile one 16x16 kernel.

/// `template` with `consts` set and every marked line written out; `file` names it in panics.
/// Panics unless each constant is declared exactly once: the dispatch sizes in Rust assume the
/// values were set, so a template edited out of this shape must fail loudly, not run one
/// family's kernels on another's grid.
pub(super) fn expand(
    file: &str,
    template: &str,
    consts: &[(&str, usize)],
    counts: &[(&str, usize)],
) -> String {
    let mut set = vec![0; consts.len()];
    let mut out = String::with_capacity(template.len() * 2);
    for line in template.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if let Some(marked) = trimmed.strip_prefix("//%[") {
            let (loops, body) = marked.split_once("] ").expect("//%[v<COUNT] body");
            for (n, values) in loop_values(loops, counts).into_iter().enumerate() {
                out.push_str(indent);
                out.push_str(&fill(body, &values).replace("{#}", &n.to_string()));
                out.push('\n');
            }
            continue;
        }
        match constant(trimmed).and_then(|name| consts.iter().position(|c| c.0 == name)) {
            Some(i) => {
                let (name, value) = consts[i];
                out.push_str(&format!("{indent}const {name}: u32 = {value}u;"));
                set[i] += 1;
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    for ((name, _), n) in consts.iter().zip(set) {
        assert_eq!(
            n, 1,
            "{file}: `const {name}: u32 = ...;` declared {n} times"
        );
    }
    out
}

/// The name a line `const NAME: u32 = ...;` declares.
fn constant(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("const ")?;
    rest.split_once(": u32 = ").map(|(name, _)| name)
}

/// Every combination of the loop variables of `v<COUNT,w<COUNT2`, the last varying fastest.
fn loop_values<'a>(loops: &'a str, counts: &[(&str, usize)]) -> Vec<Vec<(&'a str, usize)>> {
    let mut all = vec![Vec::new()];
    for spec in loops.split(',') {
        let (var, count) = spec.split_once('<').expect("v<COUNT");
        let n = counts
            .iter()
            .find(|(c, _)| *c == count)
            .unwrap_or_else(|| panic!("unknown count {count} in //%[{loops}]"))
            .1;
        all = all
            .into_iter()
            .flat_map(|prefix| {
                (0..n).map(move |v| {
                    let mut p = prefix.clone();
                    p.push((var, v));
                    p
                })
            })
            .collect();
    }
    all
}

/// `body` with {v}, {4*v}, {4*v+1} to {4*v+3}, {2*v}, {2*v+1}, {v/4} and {v%4} of each loop
/// variable replaced by its value.
fn fill(body: &str, values: &[(&str, usize)]) -> String {
    let mut s = body.to_string();
    for (var, v) in values {
        for k in 1..4 {
            s = s.replace(&format!("{{4*{var}+{k}}}"), &(4 * v + k).to_string());
        }
        s = s
            .replace(&format!("{{4*{var}}}"), &(4 * v).to_string())
            .replace(&format!("{{2*{var}+1}}"), &(2 * v + 1).to_string())
            .replace(&format!("{{2*{var}}}"), &(2 * v).to_string())
            .replace(&format!("{{{var}/4}}"), &(v / 4).to_string())
            .replace(&format!("{{{var}%4}}"), &(v % 4).to_string())
            .replace(&format!("{{{var}}}"), &v.to_string());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marked_lines_are_written_out_per_group() {
        let t = "const CB: u32 = 16u;\nconst PB: u32 = 16u;\n  //%[g<CB4,j<PB4] a{g}{j} += outer(w{g}, v{j});\n//%[j<PB4] let x{j} = f(m0 + {4*j}u);\nplain\n";
        let e = expand("t", t, &[("CB", 8), ("PB", 16)], &[("CB4", 2), ("PB4", 4)]);
        assert!(e.starts_with("const CB: u32 = 8u;\nconst PB: u32 = 16u;\n"));
        assert_eq!(e.matches("+= outer").count(), 2 * 4);
        assert!(e.contains("  a13 += outer(w1, v3);"));
        assert!(e.contains("let x3 = f(m0 + 12u);") && !e.contains("x4"));
        assert!(e.ends_with("plain\n") && !e.contains("//%"));
    }

    #[test]
    fn the_ordinal_counts_combinations_in_their_order() {
        let t = "//%[g<CB4,j<PB4] case {#}u: { a = a{g}{j}; }\n";
        let e = expand("t", t, &[], &[("CB4", 2), ("PB4", 3)]);
        let cases: Vec<&str> = e.lines().collect();
        assert_eq!(cases.len(), 6);
        assert_eq!(cases[0], "case 0u: { a = a00; }");
        assert_eq!(cases[4], "case 4u: { a = a11; }"); // g = 4 / 3, j = 4 % 3
        assert_eq!(cases[5], "case 5u: { a = a12; }");
    }

    #[test]
    fn loops_nest_with_the_last_variable_fastest() {
        let counts = [("RM", 2), ("RN4", 3)];
        let v = loop_values("r<RM,j<RN4", &counts);
        assert_eq!(v.len(), 6);
        assert_eq!(v[1], vec![("r", 0), ("j", 1)]);
        assert_eq!(fill("a{r/4}[{r%4}] {j}", &[("r", 6), ("j", 2)]), "a1[2] 2");
        assert_eq!(fill("a{2*h} a{2*h+1}", &[("h", 1)]), "a2 a3");
        assert_eq!(fill("{4*i} {4*i+1} {4*i+3}", &[("i", 2)]), "8 9 11");
    }

    #[test]
    #[should_panic(expected = "declared 0 times")]
    fn a_constant_the_template_lost_fails_loudly() {
        expand("t", "const CB: u32 = 16u;\n", &[("CB", 8), ("PB", 8)], &[]);
    }
}
