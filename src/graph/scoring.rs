//! How the network's outputs are scored: the training loss (mean softmax cross-entropy, with
//! Keras's label smoothing and class weights, as an op) and, on the host, arg-max and accuracy.

use anyhow::{Result, ensure};
use tensorflow::{Output, Scope, Tensor, ops};

/// What the loss compares the logits with, beyond the labels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Targets {
    /// Keras's `CategoricalCrossentropy(label_smoothing=S)`: targets (1 - S) * onehot + S / K.
    pub label_smoothing: f32,
    /// Keras's `class_weight`: each example's loss times its class's weight, summed over the
    /// batch and divided by the batch size.
    pub class_weights: Option<Vec<f32>>,
}

/// Mean softmax cross-entropy of `logits` against int32 class `labels`.
pub fn softmax_loss(s: &mut Scope, logits: Output, labels: Output, classes: usize, targets: &Targets) -> Result<Output> {
    let depth = ops::constant(classes as i32, s)?;
    let k = classes as f32;
    let smooth = targets.label_smoothing;
    // Plain one-hot targets unless smoothing: the Swift recipe's graph stays what it was.
    let (on, off) = if smooth > 0.0 { ((1.0 - smooth) + smooth / k, smooth / k) } else { (1.0, 0.0) };
    let one_hot = ops::one_hot(labels.clone(), depth, ops::constant(on, s)?, ops::constant(off, s)?, s)?;
    // The dense op: SparseSoftmaxCrossEntropyWithLogits has no C++ gradient.
    let xent: Output = Output { operation: ops::softmax_cross_entropy_with_logits(logits, one_hot, s)?, index: 0 };
    let per_example: Output = match &targets.class_weights {
        None => xent,
        Some(w) => {
            ensure!(w.len() == classes, "{} class weights for {classes} classes", w.len());
            let table = ops::constant(Tensor::<f32>::new(&[w.len() as u64]).with_values(w)?, s)?;
            let axis = ops::constant(0i32, s)?;
            let weight = ops::gather_v2(table, labels, axis, s)?;
            ops::mul(xent, weight, s)?.into()
        }
    };
    let batch_axis = ops::constant(&[0i32][..], s)?;
    Ok(ops::mean(per_example, batch_axis, &mut s.with_op_name("mean"))?.into())
}

/// Percent of rows of `logits` whose arg-max is the label.
pub fn accuracy(logits: &[Vec<f32>], labels: &[usize]) -> f64 {
    let correct = logits.iter().zip(labels).filter(|&(l, &y)| argmax(l) == y).count();
    100.0 * correct as f64 / labels.len().max(1) as f64
}

/// Percent of rows of `logits` with the label among the `k` highest: fewer than `k` classes
/// score strictly higher (ties count as in, as TensorFlow's InTopKV2).
pub fn top_k_accuracy(logits: &[Vec<f32>], labels: &[usize], k: usize) -> f64 {
    let hit = |l: &Vec<f32>, y: usize| l.iter().filter(|&&x| x > l[y]).count() < k;
    let correct = logits.iter().zip(labels).filter(|&(l, &y)| hit(l, y)).count();
    100.0 * correct as f64 / labels.len().max(1) as f64
}

pub fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, &x)| if x > v[best] { i } else { best })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_counts_argmax_hits() {
        let logits = vec![vec![0.1, 0.9], vec![2.0, 1.0], vec![0.0, 3.0]];
        assert!((accuracy(&logits, &[1, 0, 0]) - 200.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn top_k_counts_the_label_among_the_k_highest() {
        let logits = vec![vec![5.0, 4.0, 3.0, 2.0, 1.0, 0.0], vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]];
        assert_eq!(top_k_accuracy(&logits, &[4, 4], 5), 100.0);
        assert_eq!(top_k_accuracy(&logits, &[5, 0], 5), 0.0);
        assert_eq!(top_k_accuracy(&logits, &[0, 5], 1), accuracy(&logits, &[0, 5]));
    }
}
