//! ResNets by name: the spec (one line per network), the architecture (torchvision's
//! `_make_layer` shape), the parameter layout with PyTorch state_dict names, initialisation, and
//! the weights on the GPU with their state_dict.

mod arch;
mod init;
mod layout;
mod spec;
mod state;
mod state_dict;
pub use state_dict::Pretrained;
mod summary;

pub use arch::{Arch, Block, ConvBn, Layer, Linear, MaxPool, Shortcut, Visitor};
pub use init::init_params;
pub use layout::{ParamLayout, Region, RegionKind};
pub use spec::{BlockKind, Family, ModelSpec, MODEL_NAMES};
pub use state::{AdaptiveState, ModelState};
pub use summary::summary;

/// The names of a model's layers with parameters, in state_dict order (`conv1`, `bn1`,
/// `layer1.0.conv1`, ..., `fc`).
pub fn layer_names(spec: &ModelSpec) -> Vec<String> {
    ParamLayout::new(&spec.arch(), 1)
        .params
        .into_iter()
        .map(|r| r.name)
        .collect()
}
