//! ResNets by name: the spec (one line per network), the architecture (torchvision's
//! `_make_layer` shape), the parameter layout with PyTorch state_dict names, initialisation, and
//! the weights on the GPU with their state_dict.

mod arch;
mod init;
mod layout;
mod spec;
mod state;
mod state_dict;
mod summary;

pub use arch::{Arch, Block, ConvBn, Layer, Linear, MaxPool, Shortcut, Visitor};
pub use init::init_params;
pub use layout::{ParamLayout, Region, RegionKind};
pub use spec::{BlockKind, Family, ModelSpec, MODEL_NAMES};
pub use state::ModelState;
pub use summary::summary;
