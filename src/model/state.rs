//! The GPU-resident state of a model: flat parameter, gradient, momentum and running-statistics
//! buffers, shared by the training and evaluation plans.

use super::{init_params, Arch, ModelSpec, ParamLayout, Region};
use crate::error::Result;
use crate::gpu::{Gpu, Tensor};

/// A model's weights on the GPU.
pub struct ModelState {
    /// The network by name.
    pub spec: ModelSpec,
    /// Its layer graph.
    pub arch: Arch,
    /// Where each parameter lives in the flat buffers.
    pub layout: ParamLayout,
    /// Flat parameters.
    pub params: Tensor,
    /// Flat gradients (same layout), overwritten by every backward pass.
    pub grads: Tensor,
    /// Flat SGD momentum buffers (same layout).
    pub momentum: Tensor,
    /// Flat BN running statistics ([2, C] per BN: mean, var).
    pub running: Tensor,
    /// BatchNorm `num_batches_tracked` (training steps taken), as PyTorch counts it.
    pub batches_tracked: std::cell::Cell<u64>,
    /// RMSprop's and AdamW's state beyond the momentum, allocated by [`ModelState::adaptive`]
    /// when a plan or a resume first needs it (an SGD run never holds it).
    adaptive: std::cell::OnceCell<AdaptiveState>,
}

/// What RMSprop and AdamW keep beside the momentum buffer.
pub struct AdaptiveState {
    /// Per-element second moments (RMSprop's square_avg, AdamW's exp_avg_sq), in the flat
    /// parameters' layout, starting at 0.
    pub second_moment: Tensor,
    /// AdamW's step count and bias corrections (`ops::sgd::ADAM_WORDS` u32 words, zeros at the
    /// start).
    pub adam: Tensor,
}

impl ModelState {
    /// A freshly initialised model (seeded).
    pub fn new(gpu: &Gpu, spec: &ModelSpec, seed: u64) -> Result<ModelState> {
        let arch = spec.arch();
        let layout = ParamLayout::new(&arch, gpu.view_align());
        let (p, r) = init_params(spec, &layout, seed);
        Ok(ModelState {
            params: gpu.upload(&p, &[layout.params_len])?,
            grads: gpu.zeros(&[layout.params_len])?,
            momentum: gpu.zeros(&[layout.params_len])?,
            running: gpu.upload(&r, &[layout.running_len])?,
            spec: spec.clone(),
            arch,
            layout,
            batches_tracked: std::cell::Cell::new(0),
            adaptive: Default::default(),
        })
    }

    /// A model holding a copy of these weights and running statistics in buffers of its own
    /// (copied on the GPU; nothing waits), without gradients or momentum (one-element
    /// placeholders): what an evaluation plan reads, such as a moving average of the weights.
    /// Its state_dict and load_state_dict work; training plans, `gradients` and the momentum's
    /// methods are not for it.
    pub fn weights_copy(&self, gpu: &Gpu) -> Result<ModelState> {
        let copy = ModelState {
            params: gpu.zeros(&[self.layout.params_len])?,
            grads: gpu.zeros(&[1])?,
            momentum: gpu.zeros(&[1])?,
            running: gpu.zeros(&[self.layout.running_len])?,
            spec: self.spec.clone(),
            arch: self.arch.clone(),
            layout: self.layout.clone(),
            batches_tracked: self.batches_tracked.clone(),
            adaptive: Default::default(),
        };
        gpu.copy(&self.params, &copy.params)?;
        gpu.copy(&self.running, &copy.running)?;
        Ok(copy)
    }

    /// Sets the weight of every residual block's last BatchNorm (`bn2` of a basic block, `bn3`
    /// of a bottleneck) to 0, as torchvision's `zero_init_residual=True` does after its
    /// initialisation: each block then starts as its shortcut. The shortcut's own BatchNorm
    /// keeps its weight.
    pub fn zero_init_residual(&self, gpu: &Gpu) -> Result<()> {
        if !self.spec.residual {
            let name = &self.spec.name;
            return Err(crate::Error::Invalid(format!(
                "`zero_init_residual` needs residual blocks, and {name} has no shortcuts"
            )));
        }
        for block in self.arch.blocks() {
            let Some(last) = block.convs.last() else {
                continue;
            };
            let r = self.layout.get(&last.bn);
            let gamma = self.params.view(r.offset, &[r.shape[1]])?;
            gpu.write(&gamma, &vec![0.0f32; r.shape[1]])?;
        }
        Ok(())
    }

    /// RMSprop's and AdamW's state, allocated (zeros) on the first call.
    pub fn adaptive(&self, gpu: &Gpu) -> Result<&AdaptiveState> {
        if let Some(state) = self.adaptive.get() {
            return Ok(state);
        }
        let state = AdaptiveState {
            second_moment: gpu.zeros(&[self.layout.params_len])?,
            adam: gpu.zeros(&[crate::ops::sgd::ADAM_WORDS])?,
        };
        Ok(self.adaptive.get_or_init(|| state))
    }

    /// That state if something allocated it.
    pub fn adaptive_if_any(&self) -> Option<&AdaptiveState> {
        self.adaptive.get()
    }

    /// GPU bytes of the model: parameters, gradients, momentum, RMSprop's or AdamW's second
    /// moments where allocated, and running statistics.
    pub fn bytes(&self) -> u64 {
        let second = self.adaptive.get().map_or(0, |_| self.layout.params_len);
        (3 * self.layout.params_len + second + self.layout.running_len) as u64 * 4
    }

    /// The view of a parameter region in `buf` (params, grads or momentum).
    pub fn view(&self, buf: &Tensor, r: &Region) -> Result<Tensor> {
        buf.view(r.offset, &r.shape)
    }

    /// Parameter view by name (conv, BN prefix or `fc` weight).
    pub fn param(&self, name: &str) -> Result<Tensor> {
        self.view(&self.params, self.layout.get(name))
    }

    /// Gradient view by name.
    pub fn grad(&self, name: &str) -> Result<Tensor> {
        self.view(&self.grads, self.layout.get(name))
    }

    /// Running-statistics view of a BN.
    pub fn running_of(&self, name: &str) -> Result<Tensor> {
        let r = self.layout.running_of(name);
        self.running.view(r.offset, &r.shape)
    }
}
