//! The layer graph of a network, built the way torchvision's `ResNet.__init__` builds it (a stem,
//! then `_make_layer(block, planes, blocks, stride)` per stage, then the classifier), and the one
//! walk over it in forward order that the parameter layout, the summary and the plan all follow.

use super::{BlockKind, Family, ModelSpec};

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
    /// Kernel height = width.
    pub kernel_size: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
    /// PyTorch's `groups` (1 but in ResNeXt's 3x3 convolutions).
    pub groups: usize,
}

impl ConvBn {
    /// A conv + BN with "same" padding (`kernel_size / 2`), as every ResNet conv but the 7x7 stem.
    fn new(
        conv: String,
        bn: String,
        cin: usize,
        cout: usize,
        kernel_size: usize,
        stride: usize,
    ) -> Self {
        ConvBn {
            conv,
            bn,
            cin,
            cout,
            kernel_size,
            stride,
            padding: kernel_size / 2,
            groups: 1,
        }
    }

    /// The weight's shape [cout, cin / groups, k, k], as PyTorch's `Conv2d.weight`.
    pub fn weight_shape(&self) -> [usize; 4] {
        let k = self.kernel_size;
        [self.cout, self.cin / self.groups, k, k]
    }

    /// The output shape [N, cout, P, Q] for an input of shape [N, cin, H, W].
    pub fn out_shape(&self, x: [usize; 4]) -> [usize; 4] {
        let o = |v: usize| (v + 2 * self.padding - self.kernel_size) / self.stride + 1;
        [x[0], self.cout, o(x[2]), o(x[3])]
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

/// One stage of blocks, as torchvision's `layer1` ... `layer4`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// `layer1`, `layer2`, ...
    pub name: String,
    /// Its blocks in order; the first one changes the stride and width.
    pub blocks: Vec<Block>,
}

/// The stem's max pool of the ImageNet family: a square window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool {
    /// Window height = width.
    pub kernel_size: usize,
    /// Stride.
    pub stride: usize,
    /// Padding on each side (never the maximum).
    pub padding: usize,
}

impl MaxPool {
    /// The output shape for an input of shape [N, C, H, W].
    pub fn out_shape(&self, x: [usize; 4]) -> [usize; 4] {
        let o = |v: usize| (v + 2 * self.padding - self.kernel_size) / self.stride + 1;
        [x[0], x[1], o(x[2]), o(x[3])]
    }
}

/// The classifier after the global average pool, as `nn.Linear(in_features, out_features)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linear {
    /// Input features (the last stage's channels).
    pub in_features: usize,
    /// Classes.
    pub out_features: usize,
}

/// The layer graph of a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arch {
    /// Stem conv + BN (+ ReLU).
    pub stem: ConvBn,
    /// The max pool after the stem (ImageNet family: 3x3, stride 2, padding 1).
    pub maxpool: Option<MaxPool>,
    /// The stages in order.
    pub layers: Vec<Layer>,
    /// Global average pool, then this classifier.
    pub fc: Linear,
}

impl Arch {
    /// Every block in forward order.
    pub fn blocks(&self) -> impl DoubleEndedIterator<Item = &Block> {
        self.layers.iter().flat_map(|l| &l.blocks)
    }

    /// Walks the network in forward order, handing each visitor call the activation the previous
    /// one returned: the stem, the max pool, each stage and its blocks, then the head.
    pub fn walk<V: Visitor>(&self, v: &mut V, input: V::Act) -> Result<(), V::Error> {
        let mut x = v.stem(&self.stem, input)?;
        if let Some(pool) = &self.maxpool {
            x = v.maxpool(pool, x)?;
        }
        for layer in &self.layers {
            v.layer(layer, &x)?;
            for block in &layer.blocks {
                x = v.block(block, x)?;
            }
        }
        v.head(&self.fc, x)
    }
}

/// What a pass over the network does at each layer. `Act` is what flows from layer to layer: a
/// shape for the summary, a GPU tensor for the plan, nothing for the parameter layout.
pub trait Visitor {
    /// The activation passed along.
    type Act;
    /// What a failing step returns.
    type Error;
    /// The stem conv + BN + ReLU.
    fn stem(&mut self, stem: &ConvBn, x: Self::Act) -> Result<Self::Act, Self::Error>;
    /// The stem's max pool.
    fn maxpool(&mut self, pool: &MaxPool, x: Self::Act) -> Result<Self::Act, Self::Error>;
    /// A stage begins with input `x` (its blocks follow).
    fn layer(&mut self, _layer: &Layer, _x: &Self::Act) -> Result<(), Self::Error> {
        Ok(())
    }
    /// One residual block.
    fn block(&mut self, block: &Block, x: Self::Act) -> Result<Self::Act, Self::Error>;
    /// Global average pool and the classifier.
    fn head(&mut self, fc: &Linear, x: Self::Act) -> Result<(), Self::Error>;
}

impl ModelSpec {
    /// The layer graph, as torchvision's `ResNet.__init__`: the stem, one `make_layer` per stage
    /// (stride 1 for the first, 2 for the rest), the classifier.
    pub fn arch(&self) -> Arch {
        let width = self.widths[0];
        let (stem, maxpool) = match self.family {
            Family::Cifar => (conv_bn("conv1", "bn1", 3, width, 3, 1), None),
            Family::ImageNet => {
                let mut stem = conv_bn("conv1", "bn1", 3, width, 7, 2);
                stem.padding = 3;
                let pool = MaxPool {
                    kernel_size: 3,
                    stride: 2,
                    padding: 1,
                };
                (stem, Some(pool))
            }
        };
        let mut cin = width;
        let mut layers = Vec::new();
        for (i, (&blocks, &planes)) in self.blocks.iter().zip(&self.widths).enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            layers.push(self.make_layer(i + 1, cin, planes, blocks, stride));
            cin = planes * self.block.expansion();
        }
        Arch {
            stem,
            maxpool,
            layers,
            fc: Linear {
                in_features: cin,
                out_features: self.num_classes,
            },
        }
    }

    /// torchvision's `_make_layer`: stage `index` of `blocks` blocks of `planes`, the first with
    /// `stride` and the shortcut that changes the shape.
    fn make_layer(
        &self,
        index: usize,
        cin: usize,
        planes: usize,
        blocks: usize,
        stride: usize,
    ) -> Layer {
        let name = format!("layer{index}");
        let cout = planes * self.block.expansion();
        let blocks = (0..blocks)
            .map(|i| {
                let (cin, stride) = if i == 0 { (cin, stride) } else { (cout, 1) };
                self.make_block(format!("{name}.{i}"), cin, planes, stride)
            })
            .collect();
        Layer { name, blocks }
    }

    /// A basic block (3x3, 3x3) or a bottleneck (1x1, 3x3 with the stride, 1x1 to 4 x planes;
    /// inside it `planes x width_per_group / 64 x groups` channels, the 3x3 in `groups` groups,
    /// as torchvision's `Bottleneck`).
    fn make_block(&self, name: String, cin: usize, planes: usize, stride: usize) -> Block {
        let conv = |j: usize, cin: usize, cout: usize, kernel_size: usize, stride: usize| {
            let (c, b) = (format!("{name}.conv{j}"), format!("{name}.bn{j}"));
            ConvBn::new(c, b, cin, cout, kernel_size, stride)
        };
        let cout = planes * self.block.expansion();
        let convs = match self.block {
            BlockKind::Basic => vec![
                conv(1, cin, planes, 3, stride),
                conv(2, planes, planes, 3, 1),
            ],
            BlockKind::Bottleneck => {
                let width = planes * self.width_per_group / 64 * self.groups;
                let grouped = ConvBn {
                    groups: self.groups,
                    ..conv(2, width, width, 3, stride)
                };
                vec![
                    conv(1, cin, width, 1, 1),
                    grouped,
                    conv(3, width, cout, 1, 1),
                ]
            }
        };
        let shortcut = self.make_shortcut(&name, cin, cout, stride);
        Block {
            name,
            convs,
            shortcut,
            cin,
            cout,
        }
    }

    /// None in a plain net; the identity where the shape stays; else option A (CIFAR, the paper's
    /// parameter-free choice) or a 1x1 conv + BN projection (torchvision's `downsample`).
    fn make_shortcut(&self, name: &str, cin: usize, cout: usize, stride: usize) -> Shortcut {
        if !self.residual {
            Shortcut::None
        } else if stride == 1 && cin == cout {
            Shortcut::Identity
        } else if self.family == Family::Cifar {
            Shortcut::OptionA { stride }
        } else {
            let (c, b) = (
                format!("{name}.downsample.0"),
                format!("{name}.downsample.1"),
            );
            Shortcut::Projection(ConvBn::new(c, b, cin, cout, 1, stride))
        }
    }
}

fn conv_bn(
    conv: &str,
    bn: &str,
    cin: usize,
    cout: usize,
    kernel_size: usize,
    stride: usize,
) -> ConvBn {
    ConvBn::new(conv.into(), bn.into(), cin, cout, kernel_size, stride)
}
