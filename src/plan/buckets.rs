//! Gradient buckets, as PyTorch's DistributedDataParallel forms them: the flat gradient cut into
//! pieces of about `bucket_cap_mb` in the order the backward pass finishes them (the classifier
//! first, the stem last), so that each piece can be exchanged with the other ranks while the GPU
//! still computes the layers below it.
//!
//! The flat buffer holds the layers in model order (the stem first, `fc` last), and the
//! backward pass runs in reverse, so what is final after a backward stage is always a suffix of
//! the buffer: a bucket is the stretch between the suffix final after one stage and the suffix
//! final after an earlier one.

use crate::model::Region;
use std::ops::Range;

/// One piece of the flat gradient and the backward stage that completes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GradBucket {
    /// The plan stage after which every gradient in `floats` is final.
    pub after_stage: usize,
    /// The floats of the flat gradient buffer it holds.
    pub floats: Range<usize>,
}

/// The parameters a backward stage computes the gradients of: its index among the plan's
/// stages and the state_dict prefixes (`fc`, `layer3.2`, `conv1` and `bn1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GradStage {
    /// The stage's index in the plan.
    pub stage: usize,
    /// state_dict prefixes of its parameters.
    pub prefixes: Vec<String>,
}

/// The flat gradient (`len` floats, laid out as `regions`) cut into buckets of at least
/// `cap` floats where the stages allow (the last may be smaller), in the order `stages` (the
/// backward stages, in the order they run) complete them. Gradients no stage computes (frozen
/// layers) go to the last bucket.
pub fn buckets(
    regions: &[Region],
    len: usize,
    stages: &[GradStage],
    cap: usize,
) -> Vec<GradBucket> {
    // the position in `stages` of the stage that completes each region (None: none does)
    let owner = |r: &Region| {
        stages.iter().position(|s| {
            s.prefixes
                .iter()
                .any(|p| r.name == *p || r.name.starts_with(&format!("{p}.")))
        })
    };
    let mut by_offset: Vec<(usize, Option<usize>)> =
        regions.iter().map(|r| (r.offset, owner(r))).collect();
    by_offset.sort();
    let (mut out, mut done_from) = (Vec::new(), len);
    for (i, s) in stages.iter().enumerate() {
        let last = i + 1 == stages.len();
        // the suffix final after stage i starts after the last region a later stage completes
        // (after the last stage, everything is as final as it gets)
        let pending = by_offset.iter().rposition(|(_, o)| o.is_none_or(|o| o > i));
        let final_from = match pending {
            Some(p) if !last => by_offset.get(p + 1).map_or(len, |&(offset, _)| offset),
            _ => 0,
        };
        if final_from < done_from && (done_from - final_from >= cap || last) {
            out.push(GradBucket {
                after_stage: s.stage,
                floats: final_from..done_from,
            });
            done_from = final_from;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ModelSpec, ParamLayout};

    /// resnet20's backward stages as the plan builds them: head, the nine blocks in reverse,
    /// the stem (stage indices as in a training plan: input, stem, 9 blocks, head, then these).
    fn resnet20() -> (ParamLayout, Vec<GradStage>) {
        let spec = ModelSpec::from_name("resnet20", 10).unwrap();
        let arch = spec.arch();
        let layout = ParamLayout::new(&arch, 1);
        let mut stages = vec![GradStage {
            stage: 12,
            prefixes: vec!["fc".into()],
        }];
        let blocks: Vec<String> = arch.blocks().map(|b| b.name.clone()).collect();
        for (i, b) in blocks.iter().rev().enumerate() {
            stages.push(GradStage {
                stage: 13 + i,
                prefixes: vec![b.clone()],
            });
        }
        stages.push(GradStage {
            stage: 22,
            prefixes: vec!["conv1".into(), "bn1".into()],
        });
        (layout, stages)
    }

    /// Buckets cover the buffer once, back to front, and no gradient sits in a bucket sent
    /// before the stage that computes it has run.
    fn check_cover(layout: &ParamLayout, stages: &[GradStage], got: &[GradBucket]) {
        let mut end = layout.params_len;
        for b in got {
            assert_eq!(b.floats.end, end, "{got:?}");
            assert!(b.floats.start < b.floats.end, "{got:?}");
            end = b.floats.start;
            for r in layout
                .params
                .iter()
                .filter(|r| b.floats.contains(&r.offset))
            {
                let s = stages.iter().find(|s| {
                    s.prefixes
                        .iter()
                        .any(|p| r.name == *p || r.name.starts_with(&format!("{p}.")))
                });
                assert!(
                    s.is_none_or(|s| s.stage <= b.after_stage),
                    "{} in {b:?}",
                    r.name
                );
            }
        }
        assert_eq!(end, 0);
    }

    #[test]
    fn a_cap_of_one_float_gives_a_bucket_per_backward_stage() {
        let (layout, stages) = resnet20();
        let got = buckets(&layout.params, layout.params_len, &stages, 1);
        check_cover(&layout, &stages, &got);
        assert_eq!(got.len(), 11);
        // fc: 64 x 10 weights and 10 biases; the stem: a 3x3 conv 3 -> 16 and its BN (2 x 16)
        assert_eq!(got[0].floats.len(), 650);
        assert_eq!(got[10].floats, 0..3 * 16 * 9 + 2 * 16);
        assert_eq!(got[10].after_stage, 22);
    }

    #[test]
    fn a_cap_above_the_gradient_gives_one_bucket_after_the_backward() {
        let (layout, stages) = resnet20();
        let got = buckets(&layout.params, layout.params_len, &stages, usize::MAX);
        assert_eq!(
            got,
            vec![GradBucket {
                after_stage: 22,
                floats: 0..layout.params_len
            }]
        );
    }

    #[test]
    fn buckets_hold_at_least_the_cap_except_the_last() {
        let (layout, stages) = resnet20();
        // a block of layer3 (two 3x3 convs 64 -> 64 and their BNs) holds 73,984 floats
        for cap in [5_000, 40_000, 100_000] {
            let got = buckets(&layout.params, layout.params_len, &stages, cap);
            check_cover(&layout, &stages, &got);
            let (_, full) = got.split_last().unwrap();
            assert!(full.iter().all(|b| b.floats.len() >= cap), "{cap}: {got:?}");
        }
    }

    #[test]
    fn layers_no_stage_computes_go_to_the_last_bucket() {
        let (layout, mut stages) = resnet20();
        // the stem and layer1 frozen: the backward stops after layer2.0
        stages.truncate(1 + 6);
        let got = buckets(&layout.params, layout.params_len, &stages, 1);
        check_cover(&layout, &stages, &got);
        let last = got.last().unwrap();
        assert_eq!(last.after_stage, stages.last().unwrap().stage);
        assert_eq!(last.floats.start, 0);
        // and the last backward stage's own (layer2.0's): up to where layer2.1 begins
        assert_eq!(last.floats.end, layout.get("layer2.1.conv1").offset);
        assert_eq!(got.len(), 7);
    }
}
