//! The register kernels in several block sizes from one source: shaders/conv2d.wgsl sets the block
//! with `const CB` (channels) and `const PB` (pixels or weights) and marks the lines to write out
//! once per channel group (`//%g`), pixel group (`//%j`) or pair (`//%gj`), with `{g}`, `{j}`
//! (the group) and `{4g}`, `{4j}` (its first channel or pixel) in them. Each block size becomes
//! one shader module, expanded once per process.

use crate::gpu::KernelFamily;
use std::sync::OnceLock;

const TEMPLATE: &str = include_str!("../../../shaders/conv2d.wgsl");

/// (file name for the pipeline cache and errors, block) of each module; the tiled kernels are in
/// every module and are built from the first.
const MODULES: [(&str, (usize, usize)); 4] = [
    ("conv2d.wgsl", (16, 16)),
    ("conv2d.wgsl (8x16)", (8, 16)),
    ("conv2d.wgsl (16x8)", (16, 8)),
    ("conv2d.wgsl (8x8)", (8, 8)),
];

/// The shader module (file name, source) that holds `family`'s kernels.
pub(super) fn module(family: KernelFamily) -> (&'static str, &'static str) {
    static SOURCES: [OnceLock<String>; 4] = [const { OnceLock::new() }; 4];
    let block = family.register_block().unwrap_or(MODULES[0].1);
    let i = MODULES
        .iter()
        .position(|m| m.1 == block)
        .expect("every register block has a module");
    let source = SOURCES[i].get_or_init(|| expand(TEMPLATE, block));
    (MODULES[i].0, source.as_str())
}

/// The template with the block set to `channels` x `pixels` and every marked line written out.
fn expand(template: &str, (channels, pixels): (usize, usize)) -> String {
    let (groups, pixel_groups) = (channels / 4, pixels / 4);
    let mut out = String::with_capacity(template.len() * 2);
    let mut set = 0;
    for line in template.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let Some(rest) = trimmed.strip_prefix("//%") else {
            match trimmed {
                "const CB: u32 = 16u;" => {
                    out.push_str(&format!("const CB: u32 = {channels}u;"));
                    set += 1;
                }
                "const PB: u32 = 16u;" => {
                    out.push_str(&format!("const PB: u32 = {pixels}u;"));
                    set += 1;
                }
                _ => out.push_str(line),
            }
            out.push('\n');
            continue;
        };
        let (which, body) = rest.split_once(' ').unwrap_or((rest, ""));
        let gs: Vec<Option<usize>> = match which.contains('g') {
            true => (0..groups).map(Some).collect(),
            false => vec![None],
        };
        let js: Vec<Option<usize>> = match which.contains('j') {
            true => (0..pixel_groups).map(Some).collect(),
            false => vec![None],
        };
        for g in &gs {
            for j in &js {
                out.push_str(indent);
                out.push_str(&fill(body, *g, *j));
                out.push('\n');
            }
        }
    }
    // the dispatch sizes in Rust assume the block was set: a template edited out of this shape
    // must fail loudly, not run 16x16 kernels on an 8x8 grid
    assert_eq!(
        set, 2,
        "shaders/conv2d.wgsl no longer declares `const CB/PB: u32 = 16u;`"
    );
    out
}

fn fill(body: &str, g: Option<usize>, j: Option<usize>) -> String {
    let mut s = body.to_string();
    if let Some(g) = g {
        s = s
            .replace("{4g}", &(4 * g).to_string())
            .replace("{g}", &g.to_string());
    }
    if let Some(j) = j {
        s = s
            .replace("{4j}", &(4 * j).to_string())
            .replace("{j}", &j.to_string());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marked_lines_are_written_out_per_group() {
        let t = "const CB: u32 = 16u;\nconst PB: u32 = 16u;\n  //%gj a{g}{j} += outer(w{g}, v{j});\n//%j let x{j} = f(m0 + {4j}u);\nplain\n";
        let e = expand(t, (8, 16));
        assert!(e.starts_with("const CB: u32 = 8u;\nconst PB: u32 = 16u;\n"));
        assert_eq!(e.matches("+= outer").count(), 2 * 4);
        assert!(e.contains("  a13 += outer(w1, v3);"));
        assert!(e.contains("let x3 = f(m0 + 12u);") && !e.contains("x4"));
        assert!(e.ends_with("plain\n") && !e.contains("//%"));
    }
}
