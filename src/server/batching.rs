//! Batching across requests, as TensorFlow Serving's `--enable_batching` does: requests that
//! arrive within a short window are joined into one session run of up to `max_batch_size` rows,
//! and the outputs are split back to each request.
//!
//! One task owns the queue (an mpsc channel); each request sends a [`Job`] and awaits its
//! oneshot reply. The task takes a worker permit before it gathers a batch, so while every
//! worker is busy the queue fills up and the next batch is a full one. Runs go to tokio's blocking
//! pool: a session run must not stall the async workers that read and answer requests.
//!
//! As in TF Serving, the queue holds at most `max_enqueued_batches` full batches: a request that
//! would overflow it is answered UNAVAILABLE (503) at once rather than left to wait, and a
//! request whose client has gone (its deadline passed) is dropped from the queue unrun.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use crate::server::error::ApiError;
use crate::server::metrics;
use crate::server::model::{Column, Fetched, LoadedModel};

/// A request's rows for one signature of one version, and where its outputs go.
pub struct Job {
    /// When it was queued (queuing latency).
    pub queued: Instant,
    pub model: Arc<LoadedModel>,
    pub signature: String,
    pub input: Column,
    pub reply: oneshot::Sender<Result<Vec<Fetched>, ApiError>>,
}

/// TF Serving's batching parameters (`--batching_parameters_file`, see
/// [`crate::server::batching_params`]).
#[derive(Clone, Debug)]
pub struct BatchOptions {
    /// How long the first request of a batch waits for others (batch_timeout_micros).
    pub window: Duration,
    pub max_batch_size: usize,
    /// Batches running at once (num_batch_threads).
    pub threads: usize,
    /// Full batches the queue holds before requests are refused.
    pub max_enqueued_batches: usize,
    /// Batch sizes a run may have (increasing, the last max_batch_size): a batch is padded up to
    /// the next one. Empty: any size.
    pub allowed_batch_sizes: Vec<usize>,
}

/// Runs a request's rows: batched with others when batching is on, else on its own.
#[derive(Clone)]
pub struct Runner {
    queue: Option<Queue>,
}

#[derive(Clone)]
struct Queue {
    jobs: mpsc::UnboundedSender<Job>,
    /// Rows waiting in `jobs` (not yet taken into a batch).
    rows: Arc<AtomicUsize>,
    capacity: usize,
    max_batch_size: usize,
}

impl Runner {
    pub fn new(batching: Option<BatchOptions>) -> Runner {
        let queue = batching.map(|opts| {
            let (jobs, rx) = mpsc::unbounded_channel();
            let rows = Arc::new(AtomicUsize::new(0));
            let capacity = opts.max_enqueued_batches.saturating_mul(opts.max_batch_size);
            let max_batch_size = opts.max_batch_size;
            tokio::spawn(batch_loop(rx, opts, rows.clone()));
            Queue { jobs, rows, capacity, max_batch_size }
        });
        Runner { queue }
    }

    pub async fn run(&self, model: Arc<LoadedModel>, signature: String, input: Column) -> Result<Vec<Fetched>, ApiError> {
        let Some(queue) = &self.queue else {
            return run_alone(model, signature, input).await;
        };
        let n = input.rows();
        if n > queue.max_batch_size {
            return Err(ApiError::bad_request(format!("{n} images in one request, more than the batch size of {} (max_batch_size)", queue.max_batch_size)));
        }
        let queued = queue.rows.fetch_add(n, Ordering::SeqCst);
        if queued + n > queue.capacity {
            queue.rows.fetch_sub(n, Ordering::SeqCst);
            return Err(ApiError::unavailable(format!(
                "the batching queue is full ({queued} images waiting, room for {}: max_enqueued_batches x max_batch_size); try again later",
                queue.capacity
            )));
        }
        let (reply, answer) = oneshot::channel();
        if queue.jobs.send(Job { queued: Instant::now(), model, signature, input, reply }).is_err() {
            queue.rows.fetch_sub(n, Ordering::SeqCst);
            return Err(ApiError::unavailable("the batcher has stopped"));
        }
        answer.await.map_err(|_| ApiError::internal("the batch was dropped"))?
    }
}

/// One session run in the blocking pool.
pub async fn run_alone(model: Arc<LoadedModel>, signature: String, input: Column) -> Result<Vec<Fetched>, ApiError> {
    tokio::task::spawn_blocking(move || timed_run(&model, &signature, &input).map_err(ApiError::from_run))
        .await
        .map_err(|e| ApiError::internal(format!("the session run panicked: {e}")))?
}

async fn batch_loop(mut rx: mpsc::UnboundedReceiver<Job>, opts: BatchOptions, queued: Arc<AtomicUsize>) {
    let workers = Arc::new(Semaphore::new(opts.threads.max(1)));
    // A job taken off the queue: its rows no longer count against the queue's room, and one
    // whose client has gone (deadline passed, connection closed) is dropped unrun.
    let take = |job: Job| {
        queued.fetch_sub(job.input.rows(), Ordering::SeqCst);
        metrics::observe(metrics::QUEUING_LATENCY, vec![("model_name", job.model.name.clone())], metrics::micros(job.queued.elapsed()));
        (!job.reply.is_closed()).then_some(job)
    };
    // A job that did not fit the previous batch starts the next one.
    let mut carried: Option<Job> = None;
    loop {
        let permit = workers.clone().acquire_owned().await.expect("semaphore is never closed");
        let first = match carried.take() {
            Some(j) => j,
            None => match rx.recv().await {
                Some(j) => match take(j) {
                    Some(j) => j,
                    None => continue,
                },
                None => return,
            },
        };
        let mut rows = first.input.rows();
        let mut batch = vec![first];
        let deadline = Instant::now() + opts.window;
        while rows < opts.max_batch_size {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(j)) => {
                    let Some(j) = take(j) else { continue };
                    if !fits(&batch[0], &j, rows, opts.max_batch_size) {
                        carried = Some(j);
                        break;
                    }
                    rows += j.input.rows();
                    batch.push(j);
                }
                _ => break,
            }
        }
        let pad_to = opts.allowed_batch_sizes.iter().copied().find(|&s| s >= rows).unwrap_or(rows);
        tokio::task::spawn_blocking(move || {
            run_batch(batch, pad_to);
            drop(permit);
        });
    }
}

/// Whether `job` can join a batch started by `first` that has `rows` rows.
fn fits(first: &Job, job: &Job, rows: usize, max: usize) -> bool {
    Arc::ptr_eq(&first.model, &job.model) && first.signature == job.signature && first.input.joins(&job.input) && rows + job.input.rows() <= max
}

/// Runs the jobs as one session call and answers each with its rows. When the batch fails on
/// its input (an image that passed the header checks but does not decode), each job is run on
/// its own, so only the request that sent the bad image fails.
fn run_batch(jobs: Vec<Job>, pad_to: usize) {
    let inputs: Vec<&Column> = jobs.iter().map(|j| &j.input).collect();
    // Padded rows (copies of the last) make the batch one of allowed_batch_sizes; their outputs
    // are left over after every job has taken its own.
    let joined = Column::concat(&inputs).padded(pad_to);
    let model = jobs[0].model.clone();
    let name = || vec![("model_name", model.name.clone())];
    metrics::observe(metrics::INPUT_BATCH_SIZE, name(), inputs.iter().map(|c| c.rows()).sum::<usize>() as f64);
    metrics::observe(metrics::PROCESSED_BATCH_SIZE, name(), joined.rows() as f64);
    match timed_run(&model, &jobs[0].signature, &joined) {
        Ok(outputs) => {
            let mut start = 0;
            for job in jobs {
                let end = start + job.input.rows();
                let mine = outputs.iter().map(|o| o.rows(start, end)).collect();
                // The client may have gone: nobody to answer.
                let _ = job.reply.send(Ok(mine));
                start = end;
            }
        }
        Err(e) if jobs.len() > 1 && ApiError::is_input_error(&e) => {
            for job in jobs {
                let _ = job.reply.send(timed_run(&job.model, &job.signature, &job.input).map_err(ApiError::from_run));
            }
        }
        Err(e) => {
            let err = ApiError::from_run(e);
            for job in jobs {
                let _ = job.reply.send(Err(err.clone()));
            }
        }
    }
}

/// A session run, its time recorded as TF Serving's runtime latency (warmup runs too, as in TF Serving).
pub fn timed_run(model: &LoadedModel, signature: &str, input: &Column) -> anyhow::Result<Vec<Fetched>> {
    let started = std::time::Instant::now();
    let out = model.run(signature, input);
    let labels = vec![("model_name", model.name.clone()), ("API", "Predict".to_string()), ("runtime", "TF1".to_string())];
    metrics::observe(metrics::RUNTIME_LATENCY, labels, metrics::micros(started.elapsed()));
    out
}
