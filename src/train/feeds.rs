//! What a training step is fed and returns: its examples ([`Batch`]), its learning rate, drop rate
//! and dropout seeds ([`StepFeeds`]), and its loss and logits ([`StepOutput`]).

use anyhow::Result;
use tensorflow::{Output, SessionRunArgs, Tensor};

/// A step's examples.
pub enum Batch {
    /// Rows of the data variable.
    Indices(Tensor<i32>),
    /// On a cluster: each replica's rows, with its share of the batch.
    Split(Vec<(Tensor<i32>, Tensor<f32>)>),
    /// Decoded images [N, S, S, 3] and their labels, when the data set is streamed from disk.
    Fed { images: Tensor<f32>, labels: Tensor<i32> },
}

impl Batch {
    pub fn indices(idx: &[i32]) -> Result<Batch> {
        Ok(Batch::Indices(Tensor::<i32>::new(&[idx.len() as u64]).with_values(idx)?))
    }
    pub fn fed(images: Tensor<f32>, labels: &[i32]) -> Result<Batch> {
        Ok(Batch::Fed { images, labels: Tensor::<i32>::new(&[labels.len() as u64]).with_values(labels)? })
    }
}

/// A step's learning rate, drop rate and dropout seeds, as tensors.
pub struct StepFeeds {
    pub(crate) lr: Tensor<f32>,
    pub(crate) dropout: Tensor<f32>,
    /// One per replica.
    pub(crate) seeds: Vec<Tensor<i64>>,
}

impl StepFeeds {
    pub fn new(lr: f32, dropout: f32, seed: [i64; 2]) -> Result<Self> {
        Self::for_replicas(lr, dropout, seed, 1)
    }

    /// Replica i of n draws its masks from [seed, step * n + i]: distinct across replicas and
    /// steps, and [seed, step] itself with one replica.
    pub fn for_replicas(lr: f32, dropout: f32, [seed, step]: [i64; 2], n: usize) -> Result<Self> {
        let seeds = (0..n as i64).map(|i| Tensor::<i64>::new(&[2]).with_values(&[seed, step * n as i64 + i])).collect::<Result<_, _>>()?;
        Ok(StepFeeds { lr: Tensor::from(lr), dropout: Tensor::from(dropout), seeds })
    }

    /// Feeds the learning rate and drop rate into their placeholders `rates`, and replica i's
    /// seed into the i-th of `seeds` (as many as both have).
    pub(crate) fn feed<'a, 'o>(&'a self, args: &mut SessionRunArgs<'a>, (lr, dropout): (&Output, &Output), seeds: impl IntoIterator<Item = &'o Output>) {
        args.add_feed(&lr.operation, lr.index, &self.lr);
        args.add_feed(&dropout.operation, dropout.index, &self.dropout);
        for (at, seed) in seeds.into_iter().zip(&self.seeds) {
            args.add_feed(&at.operation, at.index, seed);
        }
    }
}

/// What a training step returns.
pub struct StepOutput {
    /// The batch's mean loss.
    pub loss: f32,
    /// The batch's logits with dropout off, before the update: with one full-set step per epoch,
    /// those of the previous epoch's final weights.
    pub logits: Vec<Vec<f32>>,
}
