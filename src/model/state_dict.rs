//! A model's weights as a PyTorch state_dict (names and layouts of torchvision / akamaster), and
//! the optimizer's state (momentum under `momentum.<name>`, RMSprop's and AdamW's second
//! moments, AdamW's step count) for exact resumption.

use super::ModelState;
use super::RegionKind;
use crate::checkpoint::{Checkpoint, NamedTensor, TensorData};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::ops::sgd::Rule;

/// The checkpoint tensor of AdamW's step count.
const ADAM_STEP: &str = "adamw.step";

fn f32t(name: String, shape: Vec<usize>, data: &[f32]) -> NamedTensor {
    NamedTensor {
        name,
        shape,
        data: TensorData::F32(data.to_vec()),
    }
}

/// (state_dict name, shape, offset into the flat buffer) of every trainable tensor.
fn trainable(m: &ModelState) -> Vec<(String, Vec<usize>, usize)> {
    let mut v = Vec::new();
    for r in &m.layout.params {
        match r.kind {
            RegionKind::ConvWeight | RegionKind::FcWeight => {
                v.push((format!("{}.weight", r.name), r.shape.clone(), r.offset))
            }
            RegionKind::FcBias => v.push((format!("{}.bias", r.name), r.shape.clone(), r.offset)),
            RegionKind::BnAffine => {
                let c = r.shape[1];
                v.push((format!("{}.weight", r.name), vec![c], r.offset));
                v.push((format!("{}.bias", r.name), vec![c], r.offset + c));
            }
        }
    }
    v
}

fn as_f32<'a>(t: &'a NamedTensor, what: &str) -> Result<&'a [f32]> {
    match &t.data {
        TensorData::F32(v) => Ok(v),
        TensorData::I64(_) => Err(Error::Invalid(format!(
            "{what}: tensor {} is integer, expected float",
            t.name
        ))),
    }
}

impl ModelState {
    /// The state_dict: weights, BN running statistics and `num_batches_tracked`.
    pub async fn state_dict(&self, gpu: &Gpu) -> Result<Vec<NamedTensor>> {
        let p = gpu.read(&self.params).await?;
        let r = gpu.read(&self.running).await?;
        let mut out: Vec<NamedTensor> = trainable(self)
            .into_iter()
            .map(|(name, shape, off)| {
                let len = shape.iter().product::<usize>();
                f32t(name, shape, &p[off..off + len])
            })
            .collect();
        for rr in &self.layout.running {
            let c = rr.shape[1];
            out.push(f32t(
                format!("{}.running_mean", rr.name),
                vec![c],
                &r[rr.offset..rr.offset + c],
            ));
            out.push(f32t(
                format!("{}.running_var", rr.name),
                vec![c],
                &r[rr.offset + c..rr.offset + 2 * c],
            ));
            out.push(NamedTensor {
                name: format!("{}.num_batches_tracked", rr.name),
                shape: vec![],
                data: TensorData::I64(vec![self.batches_tracked.get() as i64]),
            });
        }
        Ok(out)
    }

    /// Loads weights and running statistics from a state_dict; every tensor must be present with
    /// the model's shape (errors name the tensor). `what` names the source in errors.
    pub fn load_state_dict(&self, gpu: &Gpu, ck: &Checkpoint, what: &str) -> Result<()> {
        // strict, like PyTorch's load_state_dict: a tensor the model does not have is an error
        let mut known: std::collections::HashSet<String> =
            trainable(self).into_iter().map(|t| t.0).collect();
        for rr in &self.layout.running {
            for suffix in ["running_mean", "running_var", "num_batches_tracked"] {
                known.insert(format!("{}.{suffix}", rr.name));
            }
        }
        if let Some(t) = ck.tensors.iter().find(|t| !known.contains(&t.name)) {
            return Err(Error::Invalid(format!(
                "{what}: unexpected tensor '{}' for a {} (a checkpoint of another model?)",
                t.name, self.spec.name
            )));
        }
        let mut p = vec![0.0f32; self.layout.params_len];
        for (name, shape, off) in trainable(self) {
            let t = ck
                .expect(&name, &shape)
                .map_err(|e| Error::Invalid(format!("{what}: {e}")))?;
            let v = as_f32(t, what)?;
            p[off..off + v.len()].copy_from_slice(v);
        }
        let mut r = vec![0.0f32; self.layout.running_len];
        let mut tracked = 0;
        for rr in &self.layout.running {
            let c = rr.shape[1];
            for (i, suffix) in ["running_mean", "running_var"].iter().enumerate() {
                let name = format!("{}.{suffix}", rr.name);
                let t = ck
                    .expect(&name, &[c])
                    .map_err(|e| Error::Invalid(format!("{what}: {e}")))?;
                r[rr.offset + i * c..rr.offset + (i + 1) * c].copy_from_slice(as_f32(t, what)?);
            }
            if let Some(NamedTensor {
                data: TensorData::I64(v),
                ..
            }) = ck.get(&format!("{}.num_batches_tracked", rr.name))
            {
                tracked = v.first().copied().unwrap_or(0).max(0) as u64;
            }
        }
        gpu.write(&self.params, &p)?;
        gpu.write(&self.running, &r)?;
        self.batches_tracked.set(tracked);
        Ok(())
    }

    /// The parameter gradients of the last backward pass, under the parameters' state_dict
    /// names (`layer1.0.conv1.weight`, `fc.bias`, ...).
    pub async fn gradients(&self, gpu: &Gpu) -> Result<Vec<NamedTensor>> {
        let g = gpu.read(&self.grads).await?;
        Ok(self.split_flat(&g, |name| name.to_string()))
    }

    /// The trainable tensors' slices of a flat buffer `v` in the parameters' layout, each
    /// under `named(its state_dict name)`: the inverse of [`ModelState::flat_tensors`].
    fn split_flat(&self, v: &[f32], named: impl Fn(&str) -> String) -> Vec<NamedTensor> {
        trainable(self)
            .into_iter()
            .map(|(name, shape, off)| {
                let len = shape.iter().product::<usize>();
                f32t(named(&name), shape, &v[off..off + len])
            })
            .collect()
    }

    /// SGD momentum buffers as `momentum.<name>` tensors.
    pub async fn momentum_tensors(&self, gpu: &Gpu) -> Result<Vec<NamedTensor>> {
        let v = gpu.read(&self.momentum).await?;
        Ok(self.split_flat(&v, |name| format!("momentum.{name}")))
    }

    /// Restores momentum buffers written by [`ModelState::momentum_tensors`].
    pub fn load_momentum(&self, gpu: &Gpu, ck: &Checkpoint, what: &str) -> Result<()> {
        gpu.write(&self.momentum, &self.flat_tensors(ck, "momentum", what)?)
    }

    /// The optimizer's state for a checkpoint: the momentum buffers (`momentum.<name>`: SGD's
    /// and RMSprop's momentum_buffer, AdamW's exp_avg), RMSprop's or AdamW's second moments
    /// under torch.optim's names (`square_avg.<name>`, `exp_avg_sq.<name>`) and AdamW's step
    /// count (`adamw.step`, one int64).
    pub async fn optimizer_tensors(&self, gpu: &Gpu, rule: Rule) -> Result<Vec<NamedTensor>> {
        let mut tensors = self.momentum_tensors(gpu).await?;
        let Some(prefix) = rule.second_moment() else {
            return Ok(tensors);
        };
        // zeros before the first step's plan allocates them, as torch's state starts
        let state = self.adaptive(gpu)?;
        let v = gpu.read(&state.second_moment).await?;
        tensors.extend(self.split_flat(&v, |name| format!("{prefix}.{name}")));
        if rule == Rule::AdamW {
            let step = gpu.read_u32(&state.adam).await?[0];
            tensors.push(NamedTensor::i64(ADAM_STEP, &[1], vec![step as i64]));
        }
        Ok(tensors)
    }

    /// Restores the state [`ModelState::optimizer_tensors`] wrote for `rule`.
    pub fn load_optimizer_state(
        &self,
        gpu: &Gpu,
        ck: &Checkpoint,
        rule: Rule,
        what: &str,
    ) -> Result<()> {
        self.load_momentum(gpu, ck, what)?;
        let Some(prefix) = rule.second_moment() else {
            return Ok(());
        };
        let state = self.adaptive(gpu)?;
        gpu.write(&state.second_moment, &self.flat_tensors(ck, prefix, what)?)?;
        if rule == Rule::AdamW {
            let fail = |e: Error| Error::Invalid(format!("{what}: {e}"));
            let t = ck.expect(ADAM_STEP, &[1]).map_err(fail)?;
            let step = match t.as_i64() {
                Some(&[n]) if (0..=u32::MAX as i64).contains(&n) => n as u32,
                _ => {
                    return Err(Error::Invalid(format!(
                        "{what}: {ADAM_STEP} is no step count"
                    )))
                }
            };
            gpu.write(&state.adam, &[step, 0, 0, 0])?;
        }
        Ok(())
    }

    /// The flat buffer of the tensors `<prefix>.<name>` of every trainable parameter in `ck`.
    fn flat_tensors(&self, ck: &Checkpoint, prefix: &str, what: &str) -> Result<Vec<f32>> {
        let mut v = vec![0.0f32; self.layout.params_len];
        for (name, shape, off) in trainable(self) {
            let t = ck
                .expect(&format!("{prefix}.{name}"), &shape)
                .map_err(|e| Error::Invalid(format!("{what}: {e}")))?;
            let d = as_f32(t, what)?;
            v[off..off + d.len()].copy_from_slice(d);
        }
        Ok(v)
    }
}

/// What [`ModelState::load_pretrained`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pretrained {
    /// Tensors taken from the checkpoint.
    pub loaded: usize,
    /// `Some((checkpoint classes, model classes))` when `fc` was left freshly initialised
    /// because the checkpoint's head has another number of classes.
    pub new_head: Option<(usize, usize)>,
}

/// At most this many names are listed per kind of mismatch.
const LISTED: usize = 6;

fn listed(kind: &str, names: &[String]) -> Option<String> {
    if names.is_empty() {
        return None;
    }
    let more = names.len().saturating_sub(LISTED);
    let shown = names[..names.len().min(LISTED)].join(", ");
    let tail = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    Some(format!("{} {kind} ({shown}{tail})", names.len()))
}

/// What keeps a checkpoint (`by_name`) from filling `wanted`: the tensors missing, unexpected
/// (`num_batches_tracked` aside) or of the wrong shape or type, a phrase for each kind there is;
/// names `skip` accepts are not looked at.
fn mismatches(
    by_name: &std::collections::HashMap<&str, &NamedTensor>,
    wanted: &[(String, Vec<usize>, Dest)],
    skip: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let (mut missing, mut wrong) = (Vec::new(), Vec::new());
    for (name, shape, _) in wanted {
        match by_name.get(name.as_str()) {
            _ if skip(name) => {}
            None => missing.push(name.clone()),
            Some(t) if t.shape != *shape || t.as_f32().is_none() => wrong.push(format!(
                "{name}: file {:?} {}, model {shape:?}",
                t.shape,
                t.data.dtype_name()
            )),
            Some(_) => {}
        }
    }
    let known: std::collections::HashSet<&str> = wanted.iter().map(|w| w.0.as_str()).collect();
    let unexpected: Vec<String> = by_name
        .keys()
        .filter(|n| !known.contains(*n) && !n.ends_with(".num_batches_tracked") && !skip(n))
        .map(|n| n.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    [
        listed("missing", &missing),
        listed("unexpected", &unexpected),
        listed("of the wrong shape", &wrong),
    ]
    .into_iter()
    .flatten()
    .collect()
}

impl ModelState {
    /// Loads pretrained weights by torchvision/timm state_dict names (a `module.` prefix, as
    /// DistributedDataParallel saves, is dropped). A checkpoint whose `fc` has another number of
    /// classes, or any `fc` when `new_head` (other classes of the same number), leaves this
    /// model's freshly initialised `fc` in place; every other tensor must be
    /// present with the model's shape, and an error lists what is missing, unexpected or of the
    /// wrong shape. `num_batches_tracked` is optional (timm checkpoints may lack it).
    pub async fn load_pretrained(
        &self,
        gpu: &Gpu,
        ck: &Checkpoint,
        what: &str,
        new_head: bool,
    ) -> Result<Pretrained> {
        let by_name: std::collections::HashMap<&str, &NamedTensor> = ck
            .tensors
            .iter()
            .map(|t| (t.name.strip_prefix("module.").unwrap_or(&t.name), t))
            .collect();
        let replaced = self.head_replaced(&by_name, new_head);
        let skip = |name: &str| replaced.is_some() && name.starts_with("fc.");
        let wanted = self.wanted_tensors();
        let problems = mismatches(&by_name, &wanted, &skip);
        if !problems.is_empty() {
            return Err(Error::Invalid(format!(
                "{what}: does not fit a {}: {}",
                self.spec.name,
                problems.join("; ")
            )));
        }
        self.copy_in(gpu, &by_name, &wanted, &skip).await?;
        Ok(Pretrained {
            loaded: wanted.iter().filter(|w| !skip(&w.0)).count(),
            new_head: replaced,
        })
    }

    /// `Some((checkpoint classes, model classes))` when the checkpoint's `fc` is to be left out:
    /// it has another number of classes, or the same number of other classes (`new_head`).
    fn head_replaced(
        &self,
        by_name: &std::collections::HashMap<&str, &NamedTensor>,
        new_head: bool,
    ) -> Option<(usize, usize)> {
        let model_fc = trainable(self)
            .into_iter()
            .find(|t| t.0 == "fc.weight")
            .map(|t| t.1)
            .unwrap_or_default();
        match by_name.get("fc.weight") {
            Some(t)
                if t.shape.len() == 2
                    && model_fc.len() == 2
                    && t.shape[1] == model_fc[1]
                    && (new_head || t.shape[0] != model_fc[0]) =>
            {
                Some((t.shape[0], model_fc[0]))
            }
            _ => None,
        }
    }

    /// Every tensor a pretrained checkpoint fills: (name, shape, destination), the trainable
    /// parameters and then the running statistics.
    fn wanted_tensors(&self) -> Vec<(String, Vec<usize>, Dest)> {
        let mut wanted: Vec<(String, Vec<usize>, Dest)> = trainable(self)
            .into_iter()
            .map(|(n, s, off)| (n, s, Dest::Param(off)))
            .collect();
        for rr in &self.layout.running {
            let c = rr.shape[1];
            wanted.push((
                format!("{}.running_mean", rr.name),
                vec![c],
                Dest::Running(rr.offset),
            ));
            wanted.push((
                format!("{}.running_var", rr.name),
                vec![c],
                Dest::Running(rr.offset + c),
            ));
        }
        wanted
    }

    /// Overwrites the named tensors of `wanted` (all checked present) in the parameter and
    /// running-statistics buffers; the rest keep their current values.
    async fn copy_in(
        &self,
        gpu: &Gpu,
        by_name: &std::collections::HashMap<&str, &NamedTensor>,
        wanted: &[(String, Vec<usize>, Dest)],
        skip: &dyn Fn(&str) -> bool,
    ) -> Result<()> {
        let mut p = gpu.read(&self.params).await?;
        let mut r = gpu.read(&self.running).await?;
        for (name, _, dest) in wanted {
            if skip(name) {
                continue;
            }
            let v = by_name[name.as_str()].as_f32().expect("checked f32");
            match *dest {
                Dest::Param(off) => p[off..off + v.len()].copy_from_slice(v),
                Dest::Running(off) => r[off..off + v.len()].copy_from_slice(v),
            }
        }
        gpu.write(&self.params, &p)?;
        gpu.write(&self.running, &r)
    }
}

/// Where a state_dict tensor goes: an offset into the parameters or the running statistics.
#[derive(Debug, Clone, Copy)]
enum Dest {
    Param(usize),
    Running(usize),
}
