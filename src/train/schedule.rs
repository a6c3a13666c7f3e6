//! Learning-rate schedules and the seeded data order (portable: used natively and in the browser).

use crate::error::{Error, Result};

/// How the learning rate evolves over a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LrSchedule {
    /// He et al.: divide by 10 at each milestone iteration (the paper: 32k and 48k of 64k); or
    /// by another factor, or every so many epochs (torch's MultiStepLR and StepLR).
    Step,
    /// Cosine annealing from the base rate to 0.
    Cosine,
    /// One-cycle (PyTorch's OneCycleLR defaults): cosine up from lr/25 to lr over 30% of the run,
    /// then cosine down to lr/(25*1e4).
    OneCycle,
    /// torch's ExponentialLR as torchvision steps it: times gamma after every epoch.
    Exponential,
}

/// When and by how much the step and exponential schedules multiply the rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Steps<'a> {
    /// The iterations at which the step schedule multiplies the rate by `gamma`.
    pub milestones: &'a [u64],
    /// Instead: every this many iterations (torch's StepLR; the exponential schedule's epoch).
    pub every: Option<u64>,
    /// The factor (torchvision's `--lr-gamma`; He et al.'s 0.1).
    pub gamma: f64,
}

impl Steps<'_> {
    /// He et al.'s division by 10 at `milestones`.
    pub fn tenfold(milestones: &[u64]) -> Steps<'_> {
        Steps {
            milestones,
            every: None,
            gamma: 0.1,
        }
    }

    /// How many times the rate has been multiplied by iteration `it`.
    fn count(&self, it: u64) -> i32 {
        match self.every {
            Some(every) => (it / every.max(1)) as i32,
            None => self.milestones.iter().filter(|&&m| it >= m).count() as i32,
        }
    }
}

impl LrSchedule {
    /// Parses `step`, `cosine`, `onecycle` or `exponential`, or torchvision's `--lr-scheduler`
    /// names `steplr`, `cosineannealinglr` and `exponentiallr`, in any case (torchvision
    /// lower-cases its `--lr-scheduler`).
    pub fn parse(s: &str) -> Result<LrSchedule> {
        match s.to_ascii_lowercase().as_str() {
            "step" | "steplr" => Ok(LrSchedule::Step),
            "cosine" | "cosineannealinglr" => Ok(LrSchedule::Cosine),
            "onecycle" => Ok(LrSchedule::OneCycle),
            "exponential" | "exponentiallr" => Ok(LrSchedule::Exponential),
            _ => Err(Error::Invalid(format!(
                "`lr_schedule`: unknown schedule '{s}' (expected step, cosine, onecycle or \
                 exponential, or torchvision's steplr, cosineannealinglr or exponentiallr)"
            ))),
        }
    }

    /// The name `parse` accepts.
    pub fn name(&self) -> &'static str {
        match self {
            LrSchedule::Step => "step",
            LrSchedule::Cosine => "cosine",
            LrSchedule::OneCycle => "onecycle",
            LrSchedule::Exponential => "exponential",
        }
    }

    /// The schedule in words: "cosine", "/10 at iterations 32000,48000", "x0.5 every 1000
    /// iterations", "x0.95 every epoch".
    pub fn describe(&self, steps: Steps) -> String {
        let by = if steps.gamma == 0.1 {
            "/10".to_string()
        } else {
            format!("x{}", steps.gamma)
        };
        match (self, steps.every) {
            (LrSchedule::Exponential, _) => format!("{by} every epoch"),
            (LrSchedule::Step, Some(every)) => format!("{by} every {every} iterations"),
            (LrSchedule::Step, None) => {
                let m: Vec<String> = steps.milestones.iter().map(|m| m.to_string()).collect();
                format!("{by} at iterations {}", m.join(","))
            }
            (other, _) => other.name().to_string(),
        }
    }

    /// Learning rate at iteration `it` (0-based) of `total`, from `base` (a cosine ends at
    /// `floor`, torch's `eta_min`), with a linear warm-up from 0 over `warmup` iterations (all
    /// but one-cycle); `steps` are the step and exponential schedules'.
    pub fn lr_at(
        &self,
        (base, floor): (f64, f64),
        it: u64,
        total: u64,
        warmup: u64,
        steps: Steps,
    ) -> f64 {
        let total = total.max(1);
        let t = it as f64 / total as f64;
        let cos =
            |a: f64, b: f64, f: f64| b + (a - b) * 0.5 * (1.0 + (std::f64::consts::PI * f).cos());
        let lr = match self {
            LrSchedule::Step | LrSchedule::Exponential => base * steps.gamma.powi(steps.count(it)),
            LrSchedule::Cosine => cos(base, floor, t),
            LrSchedule::OneCycle => {
                let (start, end, peak) = (base / 25.0, base / 25.0 / 1e4, 0.3);
                return if t < peak {
                    cos(start, base, t / peak)
                } else {
                    cos(base, end, (t - peak) / (1.0 - peak))
                };
            }
        };
        if it < warmup {
            lr * (it + 1) as f64 / warmup as f64
        } else {
            lr
        }
    }
}

/// How torchvision's training script warms the rate up over its first epochs
/// (`--lr-warmup-method`): the rate is `base x factor` for the whole of each warm-up epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmupMethod {
    /// torch's ConstantLR: `decay` for every warm-up epoch (torchvision's default).
    Constant,
    /// torch's LinearLR: from `decay` at epoch 0 in equal steps towards 1 at the warm-up's end.
    Linear,
}

impl WarmupMethod {
    /// Parses `constant` or `linear`.
    pub fn parse(s: &str) -> Result<WarmupMethod> {
        match s {
            "constant" => Ok(WarmupMethod::Constant),
            "linear" => Ok(WarmupMethod::Linear),
            _ => Err(Error::Invalid(format!(
                "`lr_warmup_method`: unknown method '{s}' (expected constant or linear)"
            ))),
        }
    }

    /// The name `parse` accepts.
    pub fn name(&self) -> &'static str {
        match self {
            WarmupMethod::Constant => "constant",
            WarmupMethod::Linear => "linear",
        }
    }

    /// The factor of the base rate in warm-up epoch `epoch` of `epochs`, starting at `decay`
    /// (the closed forms of torch's ConstantLR and LinearLR).
    pub fn factor(&self, decay: f64, epoch: u64, epochs: u64) -> f64 {
        match self {
            WarmupMethod::Constant => decay,
            WarmupMethod::Linear => {
                decay + (1.0 - decay) * epoch.min(epochs) as f64 / epochs as f64
            }
        }
    }
}

/// A permutation of 0..n from `seed` (Fisher-Yates with SplitMix64), the same on every platform.
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = crate::rng::SplitMix64(seed ^ 0xD1B54A32D192ED03);
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
    v
}

/// torchvision's repeated-augmentation sampler (`--ra-sampler`, its references' RASampler) in
/// global terms: the epoch's permutation `perm` with each image repeated `reps` times in a
/// row, dealt out in turn to `ranks` ranks (rank r takes the r-th of every `ranks`, so an
/// image's repeats go to different ranks, or with one process into the same batch), laid out
/// as the global batches of `batch` images whose rank r holds shard r. Each entry is (image,
/// which repeat of it: its augmentation is drawn apart). Enough for `steps` batches: an epoch
/// keeps its length (torchvision's keeps about the data set's too) and sees about 1/reps of the
/// images.
pub fn repeated_augmentation(
    perm: &[usize],
    reps: usize,
    (ranks, batch, steps): (usize, usize, usize),
) -> Vec<(usize, u32)> {
    let repeated: Vec<(usize, u32)> = perm
        .iter()
        .flat_map(|&i| (0..reps as u32).map(move |k| (i, k)))
        .collect();
    // rank r's sampler: every ranks-th from r (the list wraps round to divide evenly)
    let per_rank = batch / ranks;
    let dealt = |rank: usize, k: usize| repeated[(rank + k * ranks) % repeated.len()];
    let mut order = Vec::with_capacity(steps * batch);
    for step in 0..steps {
        for rank in 0..ranks {
            order.extend((0..per_rank).map(|k| dealt(rank, step * per_rank + k)));
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_schedule_divides_by_ten_at_32k_and_48k_of_64k() {
        let s = LrSchedule::Step;
        let m = [32_000, 48_000];
        assert_eq!(
            s.lr_at((0.1, 0.0), 31_999, 64_000, 0, Steps::tenfold(&m)),
            0.1
        );
        assert!((s.lr_at((0.1, 0.0), 32_000, 64_000, 0, Steps::tenfold(&m)) - 0.01).abs() < 1e-12);
        assert!((s.lr_at((0.1, 0.0), 48_000, 64_000, 0, Steps::tenfold(&m)) - 0.001).abs() < 1e-12);
        assert!((s.lr_at((0.1, 0.0), 0, 100, 10, Steps::tenfold(&m)) - 0.01).abs() < 1e-12);
        assert!(
            (LrSchedule::Cosine.lr_at((0.1, 0.0), 50, 100, 0, Steps::tenfold(&m)) - 0.05).abs()
                < 1e-12
        );
        let oc = LrSchedule::OneCycle;
        assert!((oc.lr_at((0.1, 0.0), 30, 100, 0, Steps::tenfold(&m)) - 0.1).abs() < 1e-9);
        assert!((oc.lr_at((0.1, 0.0), 0, 100, 0, Steps::tenfold(&m)) - 0.004).abs() < 1e-9);
    }

    #[test]
    fn schedules_say_when_they_multiply_the_rate() {
        let m = [32_000, 48_000];
        assert_eq!(
            LrSchedule::Step.describe(Steps::tenfold(&m)),
            "/10 at iterations 32000,48000"
        );
        let every = Steps {
            milestones: &[],
            every: Some(5),
            gamma: 0.5,
        };
        assert_eq!(LrSchedule::Step.describe(every), "x0.5 every 5 iterations");
        assert_eq!(LrSchedule::Exponential.describe(every), "x0.5 every epoch");
        // every 5 iterations, by 0.5: 0.1 until 4, 0.05 from 5, 0.025 from 10
        let lr = |it| LrSchedule::Step.lr_at((0.1, 0.0), it, 100, 0, every);
        assert_eq!((lr(4), lr(5), lr(10)), (0.1, 0.05, 0.025));
    }

    #[test]
    fn repeated_augmentation_deals_each_images_repeats_in_turn() {
        let perm: Vec<usize> = (0..10).rev().collect();
        // one process: each image three times in a row, 2 batches of 4
        let one = repeated_augmentation(&perm, 3, (1, 4, 2));
        let images: Vec<usize> = one.iter().map(|e| e.0).collect();
        assert_eq!(images, [9, 9, 9, 8, 8, 8, 7, 7]);
        let repeats: Vec<u32> = one.iter().map(|e| e.1).collect();
        assert_eq!(repeats, [0, 1, 2, 0, 1, 2, 0, 1]);
        // two ranks: rank 0 takes the 1st, 3rd, 5th... of 9,9,9,8,8,8,7,7,7..., rank 1 the rest;
        // a global batch of 4 holds rank 0's two, then rank 1's two
        let two = repeated_augmentation(&perm, 3, (2, 4, 2));
        let images: Vec<usize> = two.iter().map(|e| e.0).collect();
        assert_eq!(images, [9, 9, 9, 8, 8, 7, 8, 7]);
        let first: Vec<(usize, u32)> = two[..4].to_vec();
        assert_eq!(first, [(9, 0), (9, 2), (9, 1), (8, 0)]);
    }

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let a = shuffled(1000, 7);
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..1000).collect::<Vec<_>>());
        assert_eq!(a, shuffled(1000, 7));
        assert_ne!(a, shuffled(1000, 8));
    }
}
