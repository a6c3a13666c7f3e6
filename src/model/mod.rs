//! ResNets by name: the architecture (torchvision's `_make_layer` shape), parameter layout with
//! PyTorch state_dict names, and initialisation.

mod init;
mod layout;
mod summary;

pub use init::init_params;
pub use layout::{ParamLayout, Region, RegionKind};
pub use summary::summary;

use crate::error::{Error, Result};

/// Which paper the network follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// He et al. 2016 section 4.2: 3x3 stem, widths 16/32/64, 6n+2 layers, option-A shortcuts.
    Cifar,
    /// torchvision: 7x7/2 stem + 3x3/2 max pool, four stages, projection shortcuts.
    ImageNet,
}

/// Residual block type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3x3 convolutions (expansion 1).
    Basic,
    /// 1x1, 3x3 (with the stride), 1x1 (expansion 4), as torchvision's ResNet v1.5.
    Bottleneck,
}

/// A network by name: e.g. `resnet20` is `{Cifar, Basic, [3, 3, 3], residual}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// The name it was made from.
    pub name: String,
    /// CIFAR or ImageNet layout.
    pub family: Family,
    /// Block type.
    pub block: BlockKind,
    /// Blocks per stage.
    pub blocks: Vec<usize>,
    /// Shortcuts on (ResNet) or off (plain net).
    pub residual: bool,
    /// Classifier outputs.
    pub num_classes: usize,
}

/// Every model name `spec` accepts.
pub const MODEL_NAMES: &[&str] = &[
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet1202",
    "plain20",
    "plain32",
    "plain44",
    "plain56",
    "plain110",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
];

impl ModelSpec {
    /// The spec of a named network with `num_classes` outputs.
    pub fn from_name(name: &str, num_classes: usize) -> Result<ModelSpec> {
        if num_classes == 0 {
            return Err(Error::Invalid("--num-classes must be at least 1".into()));
        }
        let cifar = |depth: usize, residual: bool| ModelSpec {
            name: name.to_string(),
            family: Family::Cifar,
            block: BlockKind::Basic,
            blocks: vec![(depth - 2) / 6; 3],
            residual,
            num_classes,
        };
        let imagenet = |block: BlockKind, blocks: &[usize]| ModelSpec {
            name: name.to_string(),
            family: Family::ImageNet,
            block,
            blocks: blocks.to_vec(),
            residual: true,
            num_classes,
        };
        Ok(match name {
            "resnet18" => imagenet(BlockKind::Basic, &[2, 2, 2, 2]),
            "resnet34" => imagenet(BlockKind::Basic, &[3, 4, 6, 3]),
            "resnet50" => imagenet(BlockKind::Bottleneck, &[3, 4, 6, 3]),
            "resnet101" => imagenet(BlockKind::Bottleneck, &[3, 4, 23, 3]),
            "resnet152" => imagenet(BlockKind::Bottleneck, &[3, 8, 36, 3]),
            _ => {
                let (residual, depth) = if let Some(d) = name.strip_prefix("resnet") {
                    (true, d)
                } else if let Some(d) = name.strip_prefix("plain") {
                    (false, d)
                } else {
                    return Err(unknown(name));
                };
                match depth.parse::<usize>() {
                    Ok(d) if d >= 8 && (d - 2) % 6 == 0 => cifar(d, residual),
                    _ => return Err(unknown(name)),
                }
            }
        })
    }

    /// The layer graph.
    pub fn arch(&self) -> Arch {
        match self.family {
            Family::Cifar => cifar_arch(self),
            Family::ImageNet => imagenet_arch(self),
        }
    }

    /// Trainable parameters (PyTorch's `sum(p.numel() for p in model.parameters())`).
    pub fn param_count(&self) -> usize {
        ParamLayout::new(&self.arch(), 1).param_count()
    }
}

fn unknown(name: &str) -> Error {
    Error::Invalid(format!(
        "--model: unknown model '{name}' (known: {}; CIFAR depths are 6n+2)",
        MODEL_NAMES.join(", ")
    ))
}

/// A convolution (no bias) and the BatchNorm after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvBn {
    /// state_dict prefix of the conv, e.g. `layer1.0.conv1`.
    pub conv: String,
    /// state_dict prefix of the BN, e.g. `layer1.0.bn1`.
    pub bn: String,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel size.
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Padding.
    pub pad: usize,
}

impl ConvBn {
    fn new(conv: String, bn: String, cin: usize, cout: usize, k: usize, stride: usize) -> Self {
        ConvBn {
            conv,
            bn,
            cin,
            cout,
            k,
            stride,
            pad: k / 2,
        }
    }
}

/// How a block's input reaches its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shortcut {
    /// Plain network: no shortcut.
    None,
    /// Identity.
    Identity,
    /// Option A: stride-2 subsample + zero channel padding (no parameters).
    OptionA {
        /// Spatial stride.
        stride: usize,
    },
    /// 1x1 conv + BN (torchvision's `downsample`).
    Projection(ConvBn),
}

/// One residual (or plain) block: convs in order, the last BN fused with add + ReLU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// e.g. `layer2.0`.
    pub name: String,
    /// 2 (basic) or 3 (bottleneck) conv+BN pairs.
    pub convs: Vec<ConvBn>,
    /// The shortcut path.
    pub shortcut: Shortcut,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
}

/// The layer graph of a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arch {
    /// Stem conv + BN (+ ReLU).
    pub stem: ConvBn,
    /// 3x3/2 max pool after the stem (ImageNet family).
    pub maxpool: bool,
    /// Residual blocks in order.
    pub blocks: Vec<Block>,
    /// Classifier input features.
    pub fc_in: usize,
    /// Classifier outputs.
    pub fc_out: usize,
}

fn cifar_arch(s: &ModelSpec) -> Arch {
    let stem = ConvBn::new("conv1".into(), "bn1".into(), 3, 16, 3, 1);
    let mut blocks = Vec::new();
    let mut cin = 16;
    for (stage, (&n, &width)) in s.blocks.iter().zip(&[16usize, 32, 64]).enumerate() {
        for i in 0..n {
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            let name = format!("layer{}.{i}", stage + 1);
            let shortcut = match (s.residual, stride != 1 || cin != width) {
                (false, _) => Shortcut::None,
                (true, false) => Shortcut::Identity,
                (true, true) => Shortcut::OptionA { stride },
            };
            blocks.push(Block {
                convs: vec![
                    ConvBn::new(
                        format!("{name}.conv1"),
                        format!("{name}.bn1"),
                        cin,
                        width,
                        3,
                        stride,
                    ),
                    ConvBn::new(
                        format!("{name}.conv2"),
                        format!("{name}.bn2"),
                        width,
                        width,
                        3,
                        1,
                    ),
                ],
                name,
                shortcut,
                cin,
                cout: width,
            });
            cin = width;
        }
    }
    Arch {
        stem,
        maxpool: false,
        blocks,
        fc_in: 64,
        fc_out: s.num_classes,
    }
}

fn imagenet_arch(s: &ModelSpec) -> Arch {
    let mut stem = ConvBn::new("conv1".into(), "bn1".into(), 3, 64, 7, 2);
    stem.pad = 3;
    let expansion = if s.block == BlockKind::Bottleneck {
        4
    } else {
        1
    };
    let mut blocks = Vec::new();
    let mut cin = 64;
    for (stage, (&n, &planes)) in s.blocks.iter().zip(&[64usize, 128, 256, 512]).enumerate() {
        for i in 0..n {
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            let name = format!("layer{}.{i}", stage + 1);
            let cout = planes * expansion;
            let c = |j: usize, a: usize, b: usize, k: usize, st: usize| {
                ConvBn::new(
                    format!("{name}.conv{j}"),
                    format!("{name}.bn{j}"),
                    a,
                    b,
                    k,
                    st,
                )
            };
            let convs = match s.block {
                BlockKind::Basic => vec![c(1, cin, planes, 3, stride), c(2, planes, planes, 3, 1)],
                BlockKind::Bottleneck => vec![
                    c(1, cin, planes, 1, 1),
                    c(2, planes, planes, 3, stride),
                    c(3, planes, cout, 1, 1),
                ],
            };
            let shortcut = if stride != 1 || cin != cout {
                Shortcut::Projection(ConvBn::new(
                    format!("{name}.downsample.0"),
                    format!("{name}.downsample.1"),
                    cin,
                    cout,
                    1,
                    stride,
                ))
            } else {
                Shortcut::Identity
            };
            blocks.push(Block {
                name,
                convs,
                shortcut,
                cin,
                cout,
            });
            cin = cout;
        }
    }
    Arch {
        stem,
        maxpool: true,
        blocks,
        fc_in: cin,
        fc_out: s.num_classes,
    }
}
