//! Between-graph replication (`alexnet train --between-graph` on every worker task): each worker
//! is a client of its own. All build the same graph: the network's variables and momentum slots
//! on the ps tasks under the same names (a VariableV2 lives in its ps' resource manager, shared
//! by name by every client of the cluster), and one replica (data variable or its own copy of the
//! tf.data pipeline, forward, loss, gradients) on the worker's own device. A worker's session
//! reaches only the ps tasks and itself. Worker i of n takes part i of every global batch
//! (`split_part`), from the same shuffled order as one process (from the pipeline: cut in the
//! graph from its pipeline's batch, which is the one process's; an epoch's steps end where its
//! batches do).
//!
//! Synchronous updates follow TF1's SyncReplicasOptimizer, cut down to one exact update per batch:
//! - per variable a ConditionalAccumulator on that variable's ps, with SUM reduction: each worker
//!   pushes its gradients already weighted by its share of the batch, so the sum is the gradient
//!   of the whole batch's mean loss (uneven parts included); one more accumulator sums the loss;
//! - a worker computes a step only when the `token` variable on ps 0 names it; it pushes its
//!   gradients tagged with that token (an accumulator drops gradients tagged with an older step);
//! - the chief (worker 0) pushes its own, waits until all n have arrived, then in one run takes
//!   the sums, applies the momentum update and writes the next step's token.
//!
//! Tokens are `generation << 32 | async << 31 | step`; every start of the chief bumps the
//! generation on the ps and writes a HOLD token, so gradients and tokens left by an earlier chief
//! are dropped or ignored, and a restarted chief's workers simply follow its (resumed) steps.
//! With `--async` the chief's token only starts the workers: each then applies its own momentum
//! updates for its parts of the run's batches, as in-graph asynchronous replicas do.
//!
//! The chief also publishes its recipe (`recipe`: what decides the steps, not paths) on ps 0;
//! before its first step of a chief's generation a worker compares its own and refuses to go on,
//! naming every field that differs, since another recipe would compute other parts unnoticed.
//!
//! Nothing here blocks inside TensorFlow: the chief polls how many gradients have arrived and
//! the workers poll the token, and between polls they check that the tasks they wait for still
//! accept connections, so a lost worker is named within about a second.

mod chief;
mod protocol;
mod worker;

pub use chief::{Chief, ChiefDriver};
pub use protocol::recipe;
pub use worker::work;
