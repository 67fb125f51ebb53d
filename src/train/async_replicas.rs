//! In-graph asynchronous replicas on a cluster: one thread per live replica runs its part of
//! every batch with its own update, as fast as it can; a lost worker's replica is dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use tensorflow::Session;

use crate::distributed::cluster::ClusterConfig;
use crate::train::replicas::{ReplicaStep, split_part};

/// What one asynchronous epoch did.
pub(crate) struct AsyncEpoch {
    /// Sum over steps of mean loss x examples.
    pub(crate) loss_sum: f64,
    pub(crate) examples: usize,
    /// A non-finite loss and its batch: the replicas stopped there.
    pub(crate) diverged: Option<(f32, usize)>,
}

/// One epoch of asynchronous updates: a thread per live replica runs its part of every batch
/// (contiguous parts, as `split_part` cuts them among the live replicas), each with its own
/// step, as fast as it can; only the epoch's end waits for all. Replica r of n draws its dropout
/// masks from [seed, step * n + r]. A replica whose worker stops answering is dropped with a
/// warning: its parts of the epoch's remaining batches are skipped, and later epochs split every
/// batch among the replicas left. The chief's own replica failing, or any other failure, is an
/// error (the other threads stop at their next step).
#[allow(clippy::too_many_arguments)]
pub(crate) fn async_epoch(
    session: &Session,
    replicas: &[ReplicaStep],
    live: &mut Vec<usize>,
    batches: &[&[i32]],
    (lr, dropout, seed): (f32, f32, i64),
    first_step: usize,
    cluster: &ClusterConfig,
    bar: &indicatif::ProgressBar,
) -> Result<AsyncEpoch> {
    let n = replicas.len();
    let parts = live.len();
    let abort = AtomicBool::new(false);
    let left = std::sync::atomic::AtomicUsize::new(parts);
    // Per live replica: (loss sum, examples, divergence, lost, error).
    type Outcome = (f64, usize, Option<(f32, usize)>, bool, Option<anyhow::Error>);
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let threads: Vec<_> = live
            .iter()
            .enumerate()
            .map(|(k, &r)| {
                let (abort, left) = (&abort, &left);
                scope.spawn(move || -> Outcome {
                    let (mut sum, mut examples) = (0.0, 0);
                    for (b, batch) in batches.iter().enumerate() {
                        let part = split_part(batch, k, parts);
                        if abort.load(Ordering::SeqCst) {
                            break;
                        }
                        if part.is_empty() {
                            continue;
                        }
                        let step = (first_step + b) as i64;
                        match replicas[r].run(session, part, lr, dropout, [seed, step * n as i64 + r as i64]) {
                            Ok(loss) if !loss.is_finite() => {
                                abort.store(true, Ordering::SeqCst);
                                return (sum, examples, Some((loss, b)), false, None);
                            }
                            Ok(loss) => {
                                sum += loss as f64 * part.len() as f64;
                                examples += part.len();
                            }
                            // The chief's replica is needed for evaluation and checkpoints.
                            Err(_) if r != 0 && cluster.is_lost("worker", r, Duration::from_secs(3)) => {
                                let remaining = left.fetch_sub(1, Ordering::SeqCst) - 1;
                                let msg = format!(
                                    "warning: lost {}: its step failed and it accepts no connection; continuing asynchronously with {remaining} worker{}",
                                    cluster.describe("worker", r),
                                    if remaining == 1 { "" } else { "s" }
                                );
                                if bar.is_hidden() {
                                    eprintln!("{msg}")
                                } else {
                                    bar.println(msg)
                                }
                                return (sum, examples, None, true, None);
                            }
                            Err(e) => {
                                abort.store(true, Ordering::SeqCst);
                                return (sum, examples, None, false, Some(e.context(format!("replica {r}'s step {b} failed"))));
                            }
                        }
                        if r == 0 {
                            bar.inc(1);
                        }
                    }
                    (sum, examples, None, false, None)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("a replica's thread panicked")).collect()
    });
    let mut epoch = AsyncEpoch { loss_sum: 0.0, examples: 0, diverged: None };
    let mut kept = vec![];
    for (&r, (sum, examples, diverged, lost, error)) in live.iter().zip(outcomes) {
        if let Some(e) = error {
            return Err(e);
        }
        epoch.loss_sum += sum;
        epoch.examples += examples;
        epoch.diverged = epoch.diverged.or(diverged);
        if !lost {
            kept.push(r);
        }
    }
    *live = kept;
    Ok(epoch)
}
