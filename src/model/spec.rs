//! Networks by name: each is one line, like the rows of the papers' tables.

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

impl BlockKind {
    /// Output channels per `planes` (torchvision's `block.expansion`).
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// A network: e.g. `resnet20` is `{Cifar, Basic, blocks [3, 3, 3], widths [16, 32, 64], residual}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// The name it was made from (written into checkpoints).
    pub name: String,
    /// CIFAR or ImageNet layout: the stem, the shortcut type and the initialisation.
    pub family: Family,
    /// Block type.
    pub block: BlockKind,
    /// Blocks per stage (torchvision's `layers`).
    pub blocks: Vec<usize>,
    /// `planes` of each stage; the stem has `widths[0]` channels.
    pub widths: Vec<usize>,
    /// torchvision's `width_per_group`: a bottleneck's 3x3 convolution has `planes x
    /// width_per_group / 64 x groups` channels (64 for the ResNets, 128 for the wide ones, whose
    /// blocks are twice as wide inside and as wide outside; 4 or 8 for the ResNeXts). Basic
    /// blocks take 64 only.
    pub width_per_group: usize,
    /// torchvision's `groups`: a bottleneck's 3x3 convolution in this many groups (Xie et al.
    /// 2017's cardinality: 32 or 64 for the ResNeXts, 1 for the rest).
    pub groups: usize,
    /// Shortcuts on (ResNet) or off (plain net).
    pub residual: bool,
    /// Classifier outputs.
    pub num_classes: usize,
}

/// Every model name `ModelSpec::from_name` accepts.
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
    "wide_resnet50_2",
    "wide_resnet101_2",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
];

/// The stage widths of He et al.'s CIFAR networks.
const CIFAR_WIDTHS: [usize; 3] = [16, 32, 64];
/// The stage widths (`planes`) of torchvision's ResNets.
const IMAGENET_WIDTHS: [usize; 4] = [64, 128, 256, 512];

impl ModelSpec {
    /// The input normalisation this model is trained with where nothing else says: CIFAR-10's
    /// for the CIFAR ResNets, ImageNet's for torchvision's (its pretrained weights expect it).
    pub fn usual_normalisation(&self) -> crate::preprocess::Normalize {
        match self.family {
            Family::Cifar => crate::preprocess::Normalize::CIFAR10,
            Family::ImageNet => crate::preprocess::Normalize::IMAGENET,
        }
    }

    /// The spec of a named network with `num_classes` outputs.
    pub fn from_name(name: &str, num_classes: usize) -> Result<ModelSpec> {
        use BlockKind::{Basic, Bottleneck};
        let wide = |spec: ModelSpec| ModelSpec {
            width_per_group: 2 * 64,
            ..spec
        };
        let spec = |family, block, blocks: &[usize], residual| ModelSpec {
            name: name.to_string(),
            family,
            block,
            blocks: blocks.to_vec(),
            widths: match family {
                Family::Cifar => CIFAR_WIDTHS.to_vec(),
                Family::ImageNet => IMAGENET_WIDTHS.to_vec(),
            },
            residual,
            num_classes,
            width_per_group: 64,
            groups: 1,
        };
        // Xie et al. 2017 as torchvision builds them: `groups` x `width_per_group` channels in
        // each bottleneck's grouped 3x3 (ResNeXt-50 32x4d: 128 at layer1, as wide as ResNet-50's
        // 64 x 2)
        let resnext = |blocks: &[usize], groups, width_per_group| ModelSpec {
            groups,
            width_per_group,
            ..spec(Family::ImageNet, Bottleneck, blocks, true)
        };
        if num_classes == 0 {
            return Err(Error::Invalid("`num_classes` must be at least 1".into()));
        }
        Ok(match name {
            "resnet18" => spec(Family::ImageNet, Basic, &[2, 2, 2, 2], true),
            "resnet34" => spec(Family::ImageNet, Basic, &[3, 4, 6, 3], true),
            "resnet50" => spec(Family::ImageNet, Bottleneck, &[3, 4, 6, 3], true),
            "resnet101" => spec(Family::ImageNet, Bottleneck, &[3, 4, 23, 3], true),
            "resnet152" => spec(Family::ImageNet, Bottleneck, &[3, 8, 36, 3], true),
            // Zagoruyko & Komodakis 2016 as torchvision builds them: ResNet-50/101 with every
            // bottleneck twice as wide inside
            "wide_resnet50_2" => wide(spec(Family::ImageNet, Bottleneck, &[3, 4, 6, 3], true)),
            "wide_resnet101_2" => wide(spec(Family::ImageNet, Bottleneck, &[3, 4, 23, 3], true)),
            "resnext50_32x4d" => resnext(&[3, 4, 6, 3], 32, 4),
            "resnext101_32x8d" => resnext(&[3, 4, 23, 3], 32, 8),
            "resnext101_64x4d" => resnext(&[3, 4, 23, 3], 64, 4),
            _ => {
                // resnetN / plainN with N = 6n + 2: n basic blocks in each of three stages
                let (residual, depth) = cifar_depth(name).ok_or_else(|| unknown(name))?;
                let n = (depth - 2) / 6;
                spec(Family::Cifar, Basic, &[n, n, n], residual)
            }
        })
    }

    /// Trainable parameters (PyTorch's `sum(p.numel() for p in model.parameters())`).
    pub fn param_count(&self) -> usize {
        super::ParamLayout::new(&self.arch(), 1).param_count()
    }
}

/// (residual, depth) of `resnetN` or `plainN` with a CIFAR depth N = 6n + 2, n >= 1.
fn cifar_depth(name: &str) -> Option<(bool, usize)> {
    let (residual, depth) = if let Some(d) = name.strip_prefix("resnet") {
        (true, d)
    } else {
        (false, name.strip_prefix("plain")?)
    };
    let depth: usize = depth.parse().ok()?;
    (depth >= 8 && (depth - 2).is_multiple_of(6)).then_some((residual, depth))
}

fn unknown(name: &str) -> Error {
    Error::Invalid(format!(
        "`model`: unknown model '{name}' (known: {}; CIFAR depths are 6n+2)",
        MODEL_NAMES.join(", ")
    ))
}
