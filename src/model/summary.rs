//! A torchinfo-style table of a network: layer (type:depth-idx), output shape, parameters,
//! and the multiply-adds of its convolutions and linear layer.

use super::{
    Arch, Block, BlockKind, ConvBn, Family, Layer, Linear, MaxPool, ModelSpec, Shortcut, Visitor,
};
use std::convert::Infallible;

struct Row {
    depth: usize,
    label: String,
    shape: Vec<usize>,
    params: Option<usize>,
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

/// The walk that lists the layers: shapes flow from layer to layer.
struct SummaryWalk {
    rows: Vec<Row>,
    /// Running index per depth, for torchinfo's `depth-idx` labels.
    idx: Vec<usize>,
    macs: u128,
    block_name: &'static str,
    /// torchvision's CIFAR ResNets pool with `AvgPool2d`, the ImageNet ones `AdaptiveAvgPool2d`.
    pool_name: &'static str,
    /// The row of the stage being walked: its shape is its last block's, known at its end.
    open_stage: Option<usize>,
}

impl SummaryWalk {
    fn push(&mut self, depth: usize, ty: &str, shape: &[usize], params: Option<usize>) -> usize {
        if self.idx.len() < depth {
            self.idx.resize(depth, 0);
        }
        self.idx[depth - 1] += 1;
        self.idx.truncate(depth);
        let label = format!("{ty}: {depth}-{}", self.idx[depth - 1]);
        self.rows.push(Row {
            depth,
            label,
            shape: shape.to_vec(),
            params,
        });
        self.rows.len() - 1
    }

    fn conv_bn(&mut self, depth: usize, c: &ConvBn, x: Shape, relu: bool) -> Shape {
        let y = c.out_shape(x);
        let weights = c.weight_shape().iter().product::<usize>();
        self.macs += weights as u128 * (y[0] * y[2] * y[3]) as u128;
        self.push(depth, "Conv2d", &y, Some(weights));
        self.push(depth, "BatchNorm2d", &y, Some(2 * c.cout));
        if relu {
            self.push(depth, "ReLU", &y, None);
        }
        y
    }

    fn close_stage(&mut self, x: Shape) {
        if let Some(row) = self.open_stage.take() {
            self.rows[row].shape = x.to_vec();
        }
    }
}

type Shape = [usize; 4];

impl Visitor for SummaryWalk {
    type Act = Shape;
    type Error = Infallible;

    fn stem(&mut self, stem: &ConvBn, x: Shape) -> Result<Shape, Infallible> {
        Ok(self.conv_bn(1, stem, x, true))
    }

    fn maxpool(&mut self, pool: &MaxPool, x: Shape) -> Result<Shape, Infallible> {
        let y = pool.out_shape(x);
        self.push(1, "MaxPool2d", &y, None);
        Ok(y)
    }

    fn layer(&mut self, _: &Layer, x: &Shape) -> Result<(), Infallible> {
        self.close_stage(*x);
        self.open_stage = Some(self.push(1, "Sequential", &[], None));
        Ok(())
    }

    fn block(&mut self, b: &Block, x: Shape) -> Result<Shape, Infallible> {
        let row = self.push(2, self.block_name, &[], None);
        let mut y = x;
        for (i, c) in b.convs.iter().enumerate() {
            y = self.conv_bn(3, c, y, false);
            if i + 1 < b.convs.len() {
                self.push(3, "ReLU", &y, None);
            }
        }
        match &b.shortcut {
            Shortcut::Projection(c) => {
                self.push(3, "Sequential", &c.out_shape(x), None);
                self.conv_bn(4, c, x, false);
            }
            Shortcut::OptionA { .. } => {
                self.push(3, "LambdaLayer", &y, None);
            }
            Shortcut::None | Shortcut::Identity => {}
        }
        self.push(3, "ReLU", &y, None);
        self.rows[row].shape = y.to_vec();
        Ok(y)
    }

    fn head(&mut self, fc: &Linear, x: Shape) -> Result<(), Infallible> {
        self.close_stage(x);
        self.push(1, self.pool_name, &[x[0], x[1], 1, 1], None);
        let (i, o) = (fc.in_features, fc.out_features);
        self.macs += (i * o * x[0]) as u128;
        self.push(1, "Linear", &[x[0], o], Some(i * o + o));
        Ok(())
    }
}

/// The summary table for `input` = [N, C, H, W].
pub fn summary(spec: &ModelSpec, input: [usize; 4]) -> String {
    let arch: Arch = spec.arch();
    let mut w = SummaryWalk {
        rows: Vec::new(),
        idx: Vec::new(),
        macs: 0,
        block_name: if spec.block == BlockKind::Bottleneck {
            "Bottleneck"
        } else {
            "BasicBlock"
        },
        pool_name: if spec.family == Family::Cifar {
            "AvgPool2d"
        } else {
            "AdaptiveAvgPool2d"
        },
        open_stage: None,
    };
    let Ok(()) = arch.walk(&mut w, input);
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
        format!("{:?}", [input[0], arch.fc.out_features]),
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
