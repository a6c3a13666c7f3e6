//! A torchinfo-style table of a network: layer (type:depth-idx), output shape, parameters,
//! and the multiply-adds of its convolutions and linear layer.

use super::{Arch, ConvBn, Family, ModelSpec, Shortcut};

struct Row {
    depth: usize,
    label: String,
    shape: Vec<usize>,
    params: Option<usize>,
}

fn conv_out(shape: &[usize], c: &ConvBn) -> Vec<usize> {
    let o = |x: usize| (x + 2 * c.pad - c.k) / c.stride + 1;
    vec![shape[0], c.cout, o(shape[2]), o(shape[3])]
}

fn fmt_int(v: usize) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

struct Walk {
    rows: Vec<Row>,
    idx: Vec<usize>,
    macs: u128,
}

impl Walk {
    fn push(&mut self, depth: usize, ty: &str, shape: Vec<usize>, params: Option<usize>) {
        if self.idx.len() < depth {
            self.idx.resize(depth, 0);
        }
        self.idx[depth - 1] += 1;
        self.idx.truncate(depth);
        let label = format!("{ty}: {depth}-{}", self.idx[depth - 1]);
        self.rows.push(Row {
            depth,
            label,
            shape,
            params,
        });
    }
    fn conv_bn(&mut self, depth: usize, c: &ConvBn, x: &[usize], relu: bool) -> Vec<usize> {
        let y = conv_out(x, c);
        self.macs += (c.cout * c.cin * c.k * c.k) as u128
            * y[1..].iter().skip(1).product::<usize>() as u128
            * y[0] as u128;
        self.push(depth, "Conv2d", y.clone(), Some(c.cout * c.cin * c.k * c.k));
        self.push(depth, "BatchNorm2d", y.clone(), Some(2 * c.cout));
        if relu {
            self.push(depth, "ReLU", y.clone(), None);
        }
        y
    }
}

/// The summary table for `input` = [N, C, H, W].
pub fn summary(spec: &ModelSpec, input: [usize; 4]) -> String {
    let arch: Arch = spec.arch();
    let mut w = Walk {
        rows: Vec::new(),
        idx: Vec::new(),
        macs: 0,
    };
    let mut x = w.conv_bn(1, &arch.stem, &input, true);
    if arch.maxpool {
        x = vec![x[0], x[1], (x[2] - 1) / 2 + 1, (x[3] - 1) / 2 + 1];
        w.push(1, "MaxPool2d", x.clone(), None);
    }
    let block_name = if spec.block == super::BlockKind::Bottleneck {
        "Bottleneck"
    } else {
        "BasicBlock"
    };
    let mut stage = 0;
    for b in &arch.blocks {
        let s: usize = b.name[5..]
            .split('.')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if s != stage {
            stage = s;
            let out_shape = {
                let blocks: Vec<_> = arch
                    .blocks
                    .iter()
                    .filter(|o| o.name.starts_with(&format!("layer{s}.")))
                    .collect();
                let mut y = x.clone();
                for ob in blocks {
                    for c in &ob.convs {
                        y = conv_out(&y, c);
                    }
                }
                y
            };
            w.push(1, "Sequential", out_shape, None);
        }
        let mut y = x.clone();
        let start = w.rows.len();
        w.push(2, block_name, vec![], None);
        for (i, c) in b.convs.iter().enumerate() {
            y = w.conv_bn(3, c, &y, false);
            if i + 1 < b.convs.len() {
                w.push(3, "ReLU", y.clone(), None);
            }
        }
        match &b.shortcut {
            Shortcut::Projection(c) => {
                w.push(3, "Sequential", conv_out(&x, c), None);
                w.conv_bn(4, c, &x, false);
            }
            Shortcut::OptionA { .. } => w.push(3, "LambdaLayer", y.clone(), None),
            _ => {}
        }
        w.push(3, "ReLU", y.clone(), None);
        w.rows[start].shape = y.clone();
        x = y;
    }
    let pool = if spec.family == Family::Cifar {
        "AvgPool2d"
    } else {
        "AdaptiveAvgPool2d"
    };
    w.push(1, pool, vec![x[0], x[1], 1, 1], None);
    w.macs += (arch.fc_in * arch.fc_out * input[0]) as u128;
    w.push(
        1,
        "Linear",
        vec![input[0], arch.fc_out],
        Some(arch.fc_in * arch.fc_out + arch.fc_out),
    );

    let line = "=".repeat(90);
    let mut out = format!(
        "{line}\n{:<45}{:<28}{}\n{line}\n",
        "Layer (type:depth-idx)", "Output Shape", "Param #"
    );
    let cls = if spec.family == Family::Cifar {
        "ResNet (CIFAR)"
    } else {
        "ResNet"
    };
    out += &format!(
        "{:<45}{:<28}{}\n",
        cls,
        format!("{:?}", [input[0], arch.fc_out]),
        "--"
    );
    for r in &w.rows {
        let indent = if r.depth == 1 {
            "├─".to_string()
        } else {
            format!("{}└─", "│    ".repeat(r.depth - 1))
        };
        let p = r.params.map(fmt_int).unwrap_or_else(|| "--".into());
        out += &format!(
            "{:<45}{:<28}{}\n",
            format!("{indent}{}", r.label),
            format!("{:?}", r.shape),
            p
        );
    }
    let total = spec.param_count();
    out += &format!(
        "{line}\nTotal params: {}\nTrainable params: {}\nNon-trainable params: 0\nTotal mult-adds (G): {:.2}\n{line}\n",
        fmt_int(total),
        fmt_int(total),
        w.macs as f64 / 1e9
    );
    out += "(mult-adds count convolutions and the linear layer)\n";
    out
}
