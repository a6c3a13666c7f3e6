//! Where every parameter lives in the flat parameter, gradient and momentum buffers, and its
//! PyTorch state_dict name. Each region starts at an offset the device can bind.

use super::{Arch, Block, ConvBn, Linear, MaxPool, Shortcut, Visitor};
use std::collections::HashMap;
use std::convert::Infallible;

/// What a region holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionKind {
    /// Conv weight [K, C / groups, R, S] (`<name>.weight`).
    ConvWeight,
    /// BatchNorm [2, C]: `<name>.weight` (gamma) then `<name>.bias` (beta).
    BnAffine,
    /// Linear weight [O, I] (`fc.weight`).
    FcWeight,
    /// Linear bias `[O]` (`fc.bias`).
    FcBias,
}

/// One parameter tensor (or BN gamma+beta pair) in the flat buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// state_dict prefix, e.g. `layer1.0.conv1` or `fc`.
    pub name: String,
    /// What it holds.
    pub kind: RegionKind,
    /// Its shape.
    pub shape: Vec<usize>,
    /// First element (in floats) in the flat buffer.
    pub offset: usize,
}

impl Region {
    /// Elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// True for an empty region (never, for real layers).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Parameter regions (trainable, in `params`) and BN running-statistics regions (in `running`,
/// each [2, C]: mean then var).
#[derive(Debug, Clone)]
pub struct ParamLayout {
    /// Trainable regions in model order.
    pub params: Vec<Region>,
    /// Floats in the flat parameter buffer (with alignment padding).
    pub params_len: usize,
    /// BN running-statistics regions, one per BN, same names as the BN's affine region.
    pub running: Vec<Region>,
    /// Floats in the flat running-statistics buffer.
    pub running_len: usize,
    index: HashMap<(String, bool), usize>,
}

impl ParamLayout {
    /// Lays out `arch` with every region starting at a multiple of `align` floats, in state_dict
    /// order: each conv then its BN, a block's convs before its projection, `fc` last.
    pub fn new(arch: &Arch, align: usize) -> ParamLayout {
        let mut l = ParamLayout {
            params: Vec::new(),
            params_len: 0,
            running: Vec::new(),
            running_len: 0,
            index: HashMap::new(),
        };
        let mut walk = LayoutWalk {
            layout: &mut l,
            align: align.max(1),
        };
        let Ok(()) = arch.walk(&mut walk, ());
        l
    }

    fn push(&mut self, name: String, kind: RegionKind, shape: Vec<usize>, align: usize) {
        let len: usize = shape.iter().product();
        let key = (name.clone(), kind == RegionKind::FcBias);
        self.index.insert(key, self.params.len());
        if kind == RegionKind::BnAffine {
            let offset = self.running_len;
            self.running_len = (offset + len).div_ceil(align) * align;
            self.running.push(Region {
                name: name.clone(),
                kind,
                shape: shape.clone(),
                offset,
            });
        }
        let offset = self.params_len;
        self.params_len = (offset + len).div_ceil(align) * align;
        self.params.push(Region {
            name,
            kind,
            shape,
            offset,
        });
    }

    /// The region of a conv weight or BN (by state_dict prefix), or `fc` weight.
    pub fn get(&self, name: &str) -> &Region {
        &self.params[self.index[&(name.to_string(), false)]]
    }

    /// The `fc.bias` region.
    pub fn fc_bias(&self) -> &Region {
        &self.params[self.index[&("fc".to_string(), true)]]
    }

    /// The running-statistics region of a BN.
    pub fn running_of(&self, name: &str) -> &Region {
        let i = self
            .running
            .iter()
            .position(|r| r.name == name)
            .expect("BN name");
        &self.running[i]
    }

    /// Trainable parameter count (PyTorch's `numel` sum).
    pub fn param_count(&self) -> usize {
        self.params.iter().map(Region::len).sum()
    }
}

/// The walk that places every parameter (its activations are nothing: only names and shapes count).
struct LayoutWalk<'a> {
    layout: &'a mut ParamLayout,
    align: usize,
}

impl LayoutWalk<'_> {
    fn conv_bn(&mut self, c: &ConvBn) {
        let shape = c.weight_shape().to_vec();
        self.layout
            .push(c.conv.clone(), RegionKind::ConvWeight, shape, self.align);
        self.layout.push(
            c.bn.clone(),
            RegionKind::BnAffine,
            vec![2, c.cout],
            self.align,
        );
    }
}

impl Visitor for LayoutWalk<'_> {
    type Act = ();
    type Error = Infallible;

    fn stem(&mut self, stem: &ConvBn, (): ()) -> Result<(), Infallible> {
        self.conv_bn(stem);
        Ok(())
    }

    fn maxpool(&mut self, _: &MaxPool, (): ()) -> Result<(), Infallible> {
        Ok(())
    }

    fn block(&mut self, b: &Block, (): ()) -> Result<(), Infallible> {
        b.convs.iter().for_each(|c| self.conv_bn(c));
        if let Shortcut::Projection(c) = &b.shortcut {
            self.conv_bn(c);
        }
        Ok(())
    }

    fn head(&mut self, fc: &Linear, (): ()) -> Result<(), Infallible> {
        let (o, i) = (fc.out_features, fc.in_features);
        self.layout
            .push("fc".into(), RegionKind::FcWeight, vec![o, i], self.align);
        self.layout
            .push("fc".into(), RegionKind::FcBias, vec![o], self.align);
        Ok(())
    }
}
