//! What kind of work a kernel does, from the op that built it: the rows of `resnet bench
//! --profile` (where a step's time goes).

use super::conv2d::{BACKWARD_INPUT, BACKWARD_WEIGHT, FORWARD};

/// A kind of op, in the order a training step first runs one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    /// The input stage: augmentation and normalisation of the u8 pixels.
    Input,
    /// Convolution forward (with its weight re-layout).
    ConvForward,
    /// Convolution backward to the input.
    ConvBackwardInput,
    /// Convolution backward to the weights (and the fixed-order reduction of its splits).
    ConvBackwardWeight,
    /// BatchNorm forward and backward (statistics, apply with the fused ReLU and residual add).
    BatchNorm,
    /// ReLU, residual add and the option-A shortcut where they are kernels of their own.
    Elementwise,
    /// Max pooling and global average pooling, forward and backward.
    Pooling,
    /// The classifier (linear layer), forward and backward.
    Linear,
    /// Cross-entropy: loss, its gradient and the running sums.
    Loss,
    /// The SGD update (and dynamic loss scaling's check and update, the weights' moving average).
    Optimizer,
    /// An op this table does not know yet (a new op to be given its kind here).
    Other,
}

impl OpKind {
    /// Every kind, in table order.
    pub const ALL: [OpKind; 11] = [
        OpKind::Input,
        OpKind::ConvForward,
        OpKind::ConvBackwardInput,
        OpKind::ConvBackwardWeight,
        OpKind::BatchNorm,
        OpKind::Elementwise,
        OpKind::Pooling,
        OpKind::Linear,
        OpKind::Loss,
        OpKind::Optimizer,
        OpKind::Other,
    ];

    /// The kind of the op named `op` (a kernel's `op`, as the ops spell it); `Other` for a name
    /// no row knows.
    pub fn of(op: &str) -> OpKind {
        match op {
            FORWARD => OpKind::ConvForward,
            BACKWARD_INPUT => OpKind::ConvBackwardInput,
            BACKWARD_WEIGHT => OpKind::ConvBackwardWeight,
            "augment" => OpKind::Input,
            "cross entropy" => OpKind::Loss,
            "sgd" | "adam_count" | "clip" | "loss scaling" | super::ema::OP => OpKind::Optimizer,
            "relu forward" | "relu backward" | "add" => OpKind::Elementwise,
            _ if op.starts_with("shortcut") => OpKind::Elementwise,
            _ if op.starts_with("batchnorm2d") => OpKind::BatchNorm,
            _ if op.starts_with("maxpool") || op.starts_with("global avgpool") => OpKind::Pooling,
            _ if op.starts_with("linear") => OpKind::Linear,
            _ => OpKind::Other,
        }
    }

    /// The row's name in a profile.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Input => "input",
            OpKind::ConvForward => "conv forward",
            OpKind::ConvBackwardInput => "conv backward (input)",
            OpKind::ConvBackwardWeight => "conv backward (weight)",
            OpKind::BatchNorm => "batchnorm",
            OpKind::Elementwise => "elementwise",
            OpKind::Pooling => "pooling",
            OpKind::Linear => "linear",
            OpKind::Loss => "loss",
            OpKind::Optimizer => "optimizer",
            OpKind::Other => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OpKind;

    #[test]
    fn names_are_distinct_and_unknown_ops_are_other() {
        let mut names: Vec<_> = OpKind::ALL.iter().map(|k| k.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), OpKind::ALL.len());
        assert_eq!(OpKind::of("conv2d forward"), OpKind::ConvForward);
        assert_eq!(OpKind::of("batchnorm2d forward (eval)"), OpKind::BatchNorm);
        assert_eq!(OpKind::of("view"), OpKind::Other);
    }
}
