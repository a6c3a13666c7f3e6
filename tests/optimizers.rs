//! torchvision's other optimizers (`--opt rmsprop`, `--opt adamw`) against torch.optim's
//! single-tensor updates written out in f64 (torch/optim/rmsprop.py and adam.py): the weights'
//! updates, the moments and AdamW's bias corrections over three steps whose learning rate
//! changes, AdamW's step count under loss scaling, the missing state refused, and every rule's
//! update of a whole ResNet-50 in one dispatch. Error norm:
//! max |gpu - ref| / max |ref| of each compared vector.

mod common;
use common::*;
use resnet::gpu::{Gpu, Kernel, Tensor};
use resnet::ops::sgd::{self, DecayKind, DecayKinds, GradFactors, Rule, SgdConfig, StepState};

const LEN: usize = 1000;
/// The learning rate of each of the three steps.
const LRS: [f32; 3] = [0.01, 0.01, 0.002];

/// The kernels of one step of `cfg` over `p`, `g` and the state, AdamW's count first.
fn step_kernels(
    gpu: &Gpu,
    cfg: &SgdConfig,
    (p, g): (&Tensor, &Tensor),
    state: StepState,
    kinds: Option<DecayKinds>,
    scaler: Option<&Tensor>,
) -> Vec<Kernel> {
    let mut ks = Vec::new();
    if cfg.rule == Rule::AdamW {
        ks.push(sgd::count(gpu, state.adam.unwrap(), scaler).unwrap());
    }
    let factors = GradFactors { scaler, clip: None };
    ks.extend(sgd::step_with(gpu, cfg, (p, g), state, kinds, factors).unwrap());
    ks
}

/// Weights in (-0.05, 0.05): small beside the steps, so that the updates read back as
/// differences of f32 weights keep 1e-6 of their precision (weights near 1 would round them to
/// 1e-7 / 0.002, 6e-5 of AdamW's last step), while their decay still counts (5e-4 of a step).
fn small_weights(seed: u64) -> Vec<f32> {
    rand_vec(LEN, seed).iter().map(|x| x * 0.05).collect()
}

/// The differences `after - before` of a read-back.
fn update(after: &[f32], before: &[f32]) -> Vec<f32> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

/// torch.optim.RMSprop (not centered) with torchvision's alpha 0.9 and eps 0.0316: with and
/// without momentum, weight decay 1e-2 added to the gradient.
#[test]
fn rmsprop_matches_torch_optim_rmsprop() {
    let gpu = gpu();
    for momentum in [0.9f32, 0.0] {
        let cfg = SgdConfig {
            rule: Rule::RmsProp,
            momentum,
            weight_decay: 1e-2,
            ..SgdConfig::he2016()
        };
        let p0 = small_weights(60);
        let p = gpu.upload(&p0, &[LEN]).unwrap();
        let g = gpu.zeros(&[LEN]).unwrap();
        let (buf, square) = (gpu.zeros(&[LEN]).unwrap(), gpu.zeros(&[LEN]).unwrap());
        let state = StepState {
            velocity: &buf,
            second: Some(&square),
            adam: None,
        };
        let ks = step_kernels(&gpu, &cfg, (&p, &g), state, None, None);
        let (mut pr, mut br, mut sr) = (f64s(&p0), vec![0.0; LEN], vec![0.0; LEN]);
        let mut before = p0.clone();
        for (step, lr) in LRS.into_iter().enumerate() {
            let gr = rand_vec(LEN, 61 + step as u64);
            ks[0].set_params(&gpu, &SgdConfig { lr, ..cfg }.uniform(LEN, 0));
            gpu.write(&g, &gr).unwrap();
            run(&gpu, &ks);
            let mut want = vec![0.0; LEN];
            for i in 0..LEN {
                let d = gr[i] as f64 + 1e-2 * pr[i];
                sr[i] = 0.9 * sr[i] + (1.0 - 0.9) * d * d;
                let avg = sr[i].sqrt() + 0.0316;
                br[i] = momentum as f64 * br[i] + d / avg;
                want[i] = -(lr as f64) * br[i];
                pr[i] += want[i];
            }
            let after = read(&gpu, &p);
            let tag = format!("rmsprop momentum {momentum} step {}", step + 1);
            assert_close(&tag, &update(&after, &before), &want, 1e-5);
            assert_close(&tag, &read(&gpu, &square), &sr, 1e-5);
            if momentum > 0.0 {
                assert_close(&tag, &read(&gpu, &buf), &br, 1e-5);
            } else {
                // torch keeps no momentum_buffer without momentum
                assert!(
                    read(&gpu, &buf).iter().all(|&b| b == 0.0),
                    "{tag}: a buffer"
                );
            }
            before = after;
        }
    }
}

/// torch.optim.AdamW (betas 0.9, 0.999, eps 1e-8), its decay decoupled and taken by torchvision's
/// parameter groups (weight_decay 0.05, norm layers 0, biases 0.2) over a step at an offset of
/// the flat buffer; its step count and bias corrections (1 - 0.9^t and sqrt(1 - 0.999^t), each
/// within 1e-6 of f64's: 1 - 0.999 computed as 1 - exp(x) in f32 would be 1e-4 away).
#[test]
fn adamw_matches_torch_optim_adamw() {
    let gpu = gpu();
    let cfg = SgdConfig {
        rule: Rule::AdamW,
        weight_decay: 0.05,
        norm_weight_decay: Some(0.0),
        bias_weight_decay: Some(0.2),
        ..SgdConfig::he2016()
    };
    let (whole, offset) = (LEN + 64, 48);
    let runs = [(30, 100, DecayKind::Norm), (500, 40, DecayKind::Bias)];
    let words = sgd::pack_decay_kinds(whole, runs);
    let words = gpu.upload(&words, &[words.len()]).unwrap();
    let decay = |i: usize| match runs
        .iter()
        .find(|r| (r.0..r.0 + r.1).contains(&(offset + i)))
    {
        Some((_, _, DecayKind::Norm)) => 0.0,
        Some((_, _, DecayKind::Bias)) => 0.2,
        _ => 0.05,
    };
    let p0 = small_weights(70);
    let p = gpu.upload(&p0, &[LEN]).unwrap();
    let g = gpu.zeros(&[LEN]).unwrap();
    let (m, v) = (gpu.zeros(&[LEN]).unwrap(), gpu.zeros(&[LEN]).unwrap());
    let adam = gpu.zeros(&[sgd::ADAM_WORDS]).unwrap();
    let state = StepState {
        velocity: &m,
        second: Some(&v),
        adam: Some(&adam),
    };
    let kinds = Some(DecayKinds {
        words: &words,
        offset,
    });
    let ks = step_kernels(&gpu, &cfg, (&p, &g), state, kinds, None);
    let (mut pr, mut mr, mut vr) = (f64s(&p0), vec![0.0; LEN], vec![0.0; LEN]);
    let mut before = p0.clone();
    for (step, lr) in LRS.into_iter().enumerate() {
        let t = step as i32 + 1;
        let gr = rand_vec(LEN, 71 + step as u64);
        ks[1].set_params(&gpu, &SgdConfig { lr, ..cfg }.uniform(LEN, offset));
        gpu.write(&g, &gr).unwrap();
        run(&gpu, &ks);
        let (bc1, bc2_sqrt) = (1.0 - 0.9f64.powi(t), (1.0 - 0.999f64.powi(t)).sqrt());
        let mut want = vec![0.0; LEN];
        for i in 0..LEN {
            let decayed = pr[i] * (1.0 - lr as f64 * decay(i));
            mr[i] += 0.1 * (gr[i] as f64 - mr[i]);
            vr[i] = 0.999 * vr[i] + 0.001 * (gr[i] as f64).powi(2);
            let denom = vr[i].sqrt() / bc2_sqrt + 1e-8;
            let next = decayed - lr as f64 / bc1 * mr[i] / denom;
            want[i] = next - pr[i];
            pr[i] = next;
        }
        let tag = format!("adamw step {t}");
        let after = read(&gpu, &p);
        assert_close(&tag, &update(&after, &before), &want, 1e-5);
        assert_close(&tag, &read(&gpu, &m), &mr, 1e-5);
        assert_close(&tag, &read(&gpu, &v), &vr, 1e-5);
        let words = gpu.read_u32_blocking(&adam).unwrap();
        assert_eq!(words[0], t as u32, "{tag}: AdamW's step count");
        let got = [f32::from_bits(words[1]), f32::from_bits(words[2])];
        assert_close(
            &format!("{tag} bias corrections"),
            &got,
            &[bc1, bc2_sqrt],
            1e-6,
        );
        before = after;
    }
}

/// The bias corrections far into a run (t = 100,000: 0.999^t is 3.5e-44 away from 0, so both
/// are 1 within f32's precision) and at t = 700, where exp rather than the series computes them.
#[test]
fn adamw_bias_corrections_hold_far_into_a_run() {
    let gpu = gpu();
    for t in [700u32, 100_000] {
        let adam = gpu.upload(&[t - 1, 0, 0, 0], &[sgd::ADAM_WORDS]).unwrap();
        run(&gpu, &[sgd::count(&gpu, &adam, None).unwrap()]);
        let words = gpu.read_u32_blocking(&adam).unwrap();
        assert_eq!(words[0], t);
        let got = [f32::from_bits(words[1]), f32::from_bits(words[2])];
        let want = [
            1.0 - 0.9f64.powi(t as i32),
            (1.0 - 0.999f64.powi(t as i32)).sqrt(),
        ];
        assert_close(&format!("bias corrections at {t}"), &got, &want, 1e-6);
    }
}

/// Under loss scaling a step whose gradients overflowed changes nothing, AdamW's step count
/// included (GradScaler skips optimizer.step): after a clean, a skipped and a clean step the
/// weights, moments and count are those of the two clean steps.
#[test]
fn adamw_does_not_count_a_skipped_step() {
    let gpu = gpu();
    let cfg = SgdConfig {
        rule: Rule::AdamW,
        ..SgdConfig::he2016()
    };
    let scale = 256.0f32;
    let clean = |seed: u64| rand_vec(LEN, seed);
    let run_steps = |grads: &[(Vec<f32>, bool)]| {
        let p = gpu.upload(&rand_vec(LEN, 80), &[LEN]).unwrap();
        let g = gpu.zeros(&[LEN]).unwrap();
        let (m, v) = (gpu.zeros(&[LEN]).unwrap(), gpu.zeros(&[LEN]).unwrap());
        let adam = gpu.zeros(&[sgd::ADAM_WORDS]).unwrap();
        let scaler = gpu.zeros(&[resnet::ops::amp::WORDS]).unwrap();
        let state = StepState {
            velocity: &m,
            second: Some(&v),
            adam: Some(&adam),
        };
        let ks = step_kernels(&gpu, &cfg, (&p, &g), state, None, Some(&scaler));
        ks[1].set_params(&gpu, &SgdConfig { lr: 1e-3, ..cfg }.uniform(LEN, 0));
        for (grad, overflowed) in grads {
            let scaled: Vec<f32> = grad.iter().map(|x| x * scale).collect();
            gpu.write(&g, &scaled).unwrap();
            // amp_find_inf's verdict, written as it leaves it
            let found = *overflowed as u32;
            let words = [scale.to_bits(), 0, found, 0, 0, 0];
            gpu.write(&scaler, &words).unwrap();
            run(&gpu, &ks);
        }
        let adam = gpu.read_u32_blocking(&adam).unwrap();
        (read(&gpu, &p), read(&gpu, &m), read(&gpu, &v), adam[0])
    };
    let skipped = run_steps(&[(clean(81), false), (clean(82), true), (clean(83), false)]);
    let two = run_steps(&[(clean(81), false), (clean(83), false)]);
    assert_eq!(skipped.3, 2, "the skipped step was counted");
    assert_eq!(skipped.0, two.0, "weights");
    assert_eq!(skipped.1, two.1, "exp_avg");
    assert_eq!(skipped.2, two.2, "exp_avg_sq");
}

/// RMSprop without its square_avg, or AdamW without its step state, is refused with a message
/// naming what is missing rather than run on a placeholder.
#[test]
fn an_adaptive_rule_without_its_state_is_refused() {
    let gpu = gpu();
    let t = gpu.zeros(&[LEN]).unwrap();
    for (rule, missing) in [(Rule::RmsProp, "square_avg"), (Rule::AdamW, "exp_avg_sq")] {
        let cfg = SgdConfig {
            rule,
            ..SgdConfig::he2016()
        };
        match sgd::step(&gpu, &cfg, &t, &t, &t, None, Default::default()) {
            Err(e) => assert!(e.to_string().contains(missing), "{e}"),
            Ok(_) => panic!("{rule:?} ran without {missing}"),
        }
    }
    let cfg = SgdConfig {
        rule: Rule::AdamW,
        ..SgdConfig::he2016()
    };
    let state = StepState {
        velocity: &t,
        second: Some(&t),
        adam: None,
    };
    let err = sgd::step_with(&gpu, &cfg, (&t, &t), state, None, Default::default());
    assert!(err.is_err_and(|e| e.to_string().contains("step state")));
}

/// Every rule updates all of ResNet-50's parameters (161 tensors, 25.6M values) in one dispatch
/// over the flat buffers, as PyTorch's multi-tensor `foreach` updates do, not one a tensor:
/// a training plan's optimizer stage holds a single update kernel (AdamW's step count before
/// it), per-kind weight decays included.
#[test]
fn every_rule_updates_all_of_resnet50_in_one_dispatch() {
    use resnet::model::{ModelSpec, ModelState};
    use resnet::plan::{Plan, PlanConfig};
    use resnet::preprocess::Preprocess;
    let gpu = gpu();
    let m = ModelState::new(&gpu, &ModelSpec::from_name("resnet50", 1000).unwrap(), 0).unwrap();
    assert_eq!(
        m.params.len() / 1000,
        25_557,
        "ResNet-50's 25,557,032 parameters"
    );
    for (rule, norm_weight_decay) in [
        (Rule::Sgd, None),
        (Rule::Sgd, Some(0.0)),
        (Rule::RmsProp, None),
        (Rule::AdamW, Some(0.0)),
    ] {
        let sgd = SgdConfig {
            rule,
            norm_weight_decay,
            ..SgdConfig::he2016()
        };
        let normalize = Preprocess::normalize_only(resnet::cifar10::NORMALIZE);
        let plan = Plan::new(&gpu, &m, PlanConfig::train(2, (32, 32), sgd, normalize)).unwrap();
        let stage = plan.stages.iter().find(|s| s.name == "optimizer").unwrap();
        let names: Vec<&str> = stage.kernels.iter().map(|k| k.name).collect();
        let want: &[&str] = match rule {
            Rule::AdamW => &["adam_count", "sgd_step"],
            _ => &["sgd_step"],
        };
        assert_eq!(names, want, "{rule:?}, norm decay {norm_weight_decay:?}");
        // over every parameter: its grid covers them all, and it binds the whole flat
        // parameters, gradients and momentum (12 bytes each)
        let update = stage.kernels.last().unwrap();
        let threads: u64 = update.grid.iter().map(|&g| g as u64).product::<u64>() * 256;
        assert!(threads >= m.params.len() as u64, "{:?}", update.grid);
        assert!(update.bytes >= 12 * m.params.len() as u64, "{rule:?}");
    }
}

/// `--opt`'s names, as torchvision's script reads them (lower-cased; sgd_nesterov is SGD with
/// Nesterov momentum), and one error listing the choices.
#[test]
fn opt_names_are_torchvisions() {
    assert_eq!(Rule::parse("SGD").unwrap(), (Rule::Sgd, false));
    assert_eq!(Rule::parse("sgd_nesterov").unwrap(), (Rule::Sgd, true));
    assert_eq!(Rule::parse("RMSprop").unwrap(), (Rule::RmsProp, false));
    assert_eq!(Rule::parse("adamw").unwrap(), (Rule::AdamW, false));
    let err = Rule::parse("adam").unwrap_err().to_string();
    for name in ["'adam'", "sgd, sgd_nesterov, rmsprop, adamw"] {
        assert!(err.contains(name), "{err}");
    }
}
