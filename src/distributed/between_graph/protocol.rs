//! The protocol between the chief and the workers: the tokens on ps 0 (generation, async bit,
//! step), the recipe every worker must share with the chief, and the session runs both sides
//! make on the accumulators.

use std::time::Duration;

use anyhow::{Context, Result};
use tensorflow::{Session, SessionRunArgs, Tensor};

use crate::data::images as data;
use crate::data::pipeline::cut::Part;
use crate::data::pipeline::is_end_of_data;
use crate::graph::runtime::CLUSTER_STEP_TIMEOUT_MS;
use crate::run::config::TrainConfig;
use crate::train::between_ops::SyncOps;
use crate::train::epoch::EpochPlan;
use crate::train::{StepFeeds, TrainGraph};

/// Low 31 bits of a token: a step, or one of these.
pub(super) const HOLD: i64 = 0x7fff_fffe;
pub(super) const END: i64 = 0x7fff_ffff;
pub(super) const ASYNC_BIT: i64 = 1 << 31;

pub(super) fn token(generation: i64, asynchronous: bool, step: i64) -> i64 {
    generation << 32 | if asynchronous { ASYNC_BIT } else { 0 } | step
}

pub(super) fn token_step(t: i64) -> i64 {
    t & 0x7fff_ffff
}

pub(super) fn token_generation(t: i64) -> i64 {
    t >> 32
}

/// How long a task waits for the one it depends on: the chief for the workers' gradients, a
/// worker for the chief's next token (which may mean: for a lost chief to be restarted).
pub(super) const WAIT: Duration = Duration::from_millis(CLUSTER_STEP_TIMEOUT_MS as u64);

/// What every worker must share with the chief to compute its parts of the same steps, as
/// (flag or name, value) pairs; not paths or the run directory, which may differ per host.
/// `dataset` is the data set as loaded (after --skip-bad-images).
pub fn recipe(cfg: &TrainConfig, dataset: &data::Dataset) -> Vec<(&'static str, String)> {
    let n_train = dataset.train.len();
    let batch = EpochPlan::new(cfg, n_train).batch;
    vec![
        ("--epochs", cfg.epochs.to_string()),
        ("--batch-size", batch.to_string()),
        ("--seed", cfg.seed.to_string()),
        ("--lr", cfg.learning_rate.to_string()),
        ("--lr-schedule", format!("{:?}", cfg.schedule)),
        ("--momentum", cfg.momentum.to_string()),
        ("--weight-decay", cfg.weight_decay.to_string()),
        ("--recipe", cfg.recipe.name().to_string()),
        ("--optimizer", format!("{:?} ({}, {}, {})", cfg.optimizer, cfg.beta1, cfg.beta2, cfg.epsilon)),
        ("--lr-warmup-epochs", cfg.warmup_epochs.to_string()),
        ("--lr-min", cfg.lr_min.to_string()),
        ("--label-smoothing", cfg.label_smoothing.to_string()),
        ("--lr-mult", cfg.lr_mults.describe().unwrap_or_default()),
        ("--class-weights", format!("{:?}", cfg.class_weights)),
        ("--clip-grad-norm", cfg.clip_grad_norm.to_string()),
        ("--ema", cfg.ema.to_string()),
        ("--dropout", cfg.dropout.to_string()),
        ("--precision", cfg.precision.name().to_string()),
        ("--async", cfg.async_updates.to_string()),
        ("--augment", cfg.augment.name()),
        ("--drop-remainder", cfg.drop_remainder.to_string()),
        ("--fc-width", cfg.model.fc_width.to_string()),
        ("--lrn", format!("{:?}", cfg.model.lrn)),
        ("input size", cfg.model.input_size.to_string()),
        ("preprocessing", format!("{:?}", cfg.preprocess)),
        ("classes", dataset.classes.join(", ")),
        ("train images", n_train.to_string()),
        ("val images", dataset.val.len().to_string()),
    ]
}

/// The recipe as published for the chief of `generation`.
pub(super) fn recipe_json(recipe: &[(&str, String)], generation: i64) -> String {
    let mut map: serde_json::Map<String, serde_json::Value> = recipe.iter().map(|(k, v)| (k.to_string(), v.clone().into())).collect();
    map.insert("generation".into(), generation.into());
    serde_json::Value::Object(map).to_string()
}

pub(super) fn recipe_generation(published: &str) -> Option<i64> {
    serde_json::from_str::<serde_json::Value>(published).ok()?.get("generation")?.as_i64()
}

/// Every field of `mine` that differs from the chief's `published` recipe, as one sentence each.
pub(super) fn recipe_differences(name: &str, mine: &[(&str, String)], published: &str) -> Result<Vec<String>> {
    let chief: serde_json::Map<String, serde_json::Value> = serde_json::from_str(published).context("the chief's recipe on ps 0 is not JSON")?;
    Ok(mine
        .iter()
        .filter_map(|(k, v)| {
            let theirs = chief.get(*k).and_then(|x| x.as_str()).unwrap_or("(none)");
            (theirs != v).then(|| format!("{name}'s {k} {v} differs from the chief's {theirs}"))
        })
        .collect())
}

pub(super) fn set_acc_step(session: &Session, sync: &SyncOps, step: i64) -> Result<()> {
    let t = Tensor::from(step);
    let mut args = SessionRunArgs::new();
    args.add_feed(&sync.acc_step.operation, sync.acc_step.index, &t);
    args.add_target(&sync.set_acc_step);
    Ok(session.run(&mut args)?)
}

/// Pushes this worker's gradients (and loss) for its `part` of a batch of `batch_len` examples,
/// tagged with `tag`; returns its part's own mean loss.
pub(super) fn push(session: &Session, tg: &TrainGraph, sync: &SyncOps, part: &[i32], batch_len: usize, feeds: &StepFeeds, tag: i64) -> Result<f32> {
    let idx = Tensor::<i32>::new(&[part.len() as u64]).with_values(part)?;
    let weight = Tensor::from(part.len() as f32 / batch_len as f32);
    let tag = Tensor::from(tag);
    let mut args = SessionRunArgs::new();
    tg.feed_part(&mut args, &idx, &weight, feeds);
    args.add_feed(&sync.local_step.operation, sync.local_step.index, &tag);
    args.add_target(&sync.push);
    let loss = args.request_fetch(&sync.local_loss.operation, sync.local_loss.index);
    session.run(&mut args)?;
    Ok(args.fetch::<f32>(loss)?[0])
}

/// From the pipeline: pushes this worker's gradients (and loss, and accuracy) for its part
/// `part` of `parts` of its pipeline's next batch, tagged with `tag`; returns its part's own mean
/// loss and the whole batch's example indices, or None when the epoch's batches are done.
pub(super) fn push_part(
    session: &Session,
    tg: &TrainGraph,
    sync: &SyncOps,
    part: (usize, usize),
    feeds: &StepFeeds,
    tag: i64,
) -> Result<Option<(f32, Vec<i32>)>> {
    let part = Part::new(part.0, part.1);
    let tag = Tensor::from(tag);
    let mut args = SessionRunArgs::new();
    tg.feed_cut_part(&mut args, &part, feeds)?;
    args.add_feed(&sync.local_step.operation, sync.local_step.index, &tag);
    args.add_target(&sync.push);
    let loss = args.request_fetch(&sync.local_loss.operation, sync.local_loss.index);
    let batch = &tg.pipeline().and_then(|p| p.cut.as_ref()).context("the graph reads no pipeline on a cluster")?.batch_indices;
    let idx = args.request_fetch(&batch.operation, batch.index);
    match session.run(&mut args) {
        Err(e) if is_end_of_data(&e) => return Ok(None),
        r => r?,
    }
    Ok(Some((args.fetch::<f32>(loss)?[0], args.fetch::<i32>(idx)?.to_vec())))
}

/// Between polls: short at first (a step's wait is usually short), longer for long waits.
pub(super) fn pause(waited: Duration) -> Duration {
    if waited < Duration::from_millis(100) {
        Duration::from_millis(1)
    } else if waited < Duration::from_secs(5) {
        Duration::from_millis(5)
    } else {
        Duration::from_millis(50)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_their_fields_apart() {
        let t = token(3, true, 12345);
        assert_eq!((token_generation(t), token_step(t), t & ASYNC_BIT != 0), (3, 12345, true));
        let t = token(7, false, END);
        assert_eq!((token_generation(t), token_step(t), t & ASYNC_BIT != 0), (7, END, false));
        // A later generation's steps are all above an earlier one's (accumulators drop older).
        assert!(token(2, false, 0) > token(1, true, END));
    }

    #[test]
    fn recipe_differences_name_every_field_with_both_values() {
        let chief = [("--epochs", "3".to_string()), ("--batch-size", "12".to_string()), ("--seed", "1".to_string())];
        let mine = [("--epochs", "5".to_string()), ("--batch-size", "24".to_string()), ("--seed", "1".to_string())];
        let d = recipe_differences("worker 1", &mine, &recipe_json(&chief, 4)).unwrap();
        assert_eq!(d, ["worker 1's --epochs 5 differs from the chief's 3", "worker 1's --batch-size 24 differs from the chief's 12"]);
        assert!(recipe_differences("worker 1", &chief, &recipe_json(&chief, 4)).unwrap().is_empty());
        assert_eq!(recipe_generation(&recipe_json(&chief, 4)), Some(4));
    }
}
