//! From logits to class probabilities, shared by `resnet predict` and the browser demo.

/// Softmax of one row of logits (computed in f64, shifted by the maximum for stability).
pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = logits.iter().map(|v| ((v - max) as f64).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

/// The `k` most probable classes as (index, probability), most probable first.
pub fn top_k(probs: &[f64], k: usize) -> Vec<(usize, f64)> {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    order.into_iter().take(k).map(|i| (i, probs[i])).collect()
}
