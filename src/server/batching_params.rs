//! TensorFlow Serving's `--batching_parameters_file`: a `BatchingParameters` message in protobuf
//! text format, as TF Serving's batching guide writes it:
//!
//! ```text
//! max_batch_size { value: 32 }
//! batch_timeout_micros { value: 5000 }
//! num_batch_threads { value: 2 }
//! max_enqueued_batches { value: 100 }
//! allowed_batch_sizes: 8
//! allowed_batch_sizes: 32
//! ```
//!
//! The message lives in TF Serving's server code (session_bundle_config.proto), which the
//! `tensorflow-serving-api` wheel does not ship, so there is no generated type to parse into: this
//! reads its flat shape by hand. A field TF Serving knows but this server does not use (a thread
//! pool name, padding of variable-length inputs) is accepted and reported; any other name is an
//! error naming the file and line, as TF Serving refuses it.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::server::batching::BatchOptions;

/// Fields of TF Serving's BatchingParameters that change nothing here.
const IGNORED: [&str; 5] =
    ["thread_pool_name", "pad_variable_length_inputs", "enable_large_batch_splitting", "max_execution_batch_size", "low_priority_max_batch_size"];

/// `defaults` with the file's fields applied; checked as TF Serving checks them.
pub fn read(path: &Path, defaults: BatchOptions) -> Result<BatchOptions> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the batching parameters file {}", path.display()))?;
    parse(&text, defaults).with_context(|| format!("{} (--batching_parameters_file, TF Serving's BatchingParameters text format)", path.display()))
}

pub fn parse(text: &str, defaults: BatchOptions) -> Result<BatchOptions> {
    let mut opts = BatchOptions { allowed_batch_sizes: vec![], ..defaults };
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (name, value) = field(line).with_context(|| format!("line {}: cannot read '{line}' (expected `name {{ value: N }}` or `name: N`)", n + 1))?;
        let number = || value.parse::<u64>().with_context(|| format!("line {}: {name} must be a whole number, not '{value}'", n + 1));
        match name {
            "max_batch_size" => opts.max_batch_size = number()? as usize,
            "batch_timeout_micros" => opts.window = Duration::from_micros(number()?),
            "num_batch_threads" => opts.threads = number()? as usize,
            "max_enqueued_batches" => opts.max_enqueued_batches = number()? as usize,
            "allowed_batch_sizes" => opts.allowed_batch_sizes.push(number()? as usize),
            _ if IGNORED.contains(&name) => eprintln!("alexnet serve: batching parameter {name} is not used by this server (ignored)"),
            _ => bail!("line {}: unknown batching parameter '{name}'", n + 1),
        }
    }
    ensure!(
        opts.max_batch_size >= 1 && opts.threads >= 1 && opts.max_enqueued_batches >= 1,
        "max_batch_size, num_batch_threads and max_enqueued_batches must be at least 1"
    );
    if let Some(&last) = opts.allowed_batch_sizes.last() {
        ensure!(opts.allowed_batch_sizes.windows(2).all(|w| w[0] < w[1]), "allowed_batch_sizes must increase");
        ensure!(last == opts.max_batch_size, "the last of allowed_batch_sizes ({last}) must equal max_batch_size ({})", opts.max_batch_size);
    }
    Ok(opts)
}

/// `name { value: V }` (a wrapper message, as TF Serving writes its scalars) or `name: V`.
fn field(line: &str) -> Option<(&str, &str)> {
    if let Some((name, rest)) = line.split_once('{') {
        let inner = rest.trim().strip_suffix('}')?.trim();
        let value = inner.strip_prefix("value")?.trim_start().strip_prefix(':')?.trim();
        return Some((name.trim(), value));
    }
    let (name, value) = line.split_once(':')?;
    Some((name.trim(), value.trim().trim_matches('"')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> BatchOptions {
        BatchOptions { window: Duration::from_millis(5), max_batch_size: 32, threads: 2, max_enqueued_batches: 100, allowed_batch_sizes: vec![] }
    }

    #[test]
    fn reads_tf_servings_batching_guide_format() {
        let text = "# from the guide\nmax_batch_size { value: 8 }\nbatch_timeout_micros { value: 250 }\nnum_batch_threads { value: 1 }\n\
                    max_enqueued_batches { value: 3 }\nallowed_batch_sizes: 4\nallowed_batch_sizes: 8\npad_variable_length_inputs: true\n";
        let o = parse(text, defaults()).unwrap();
        assert_eq!((o.max_batch_size, o.window, o.threads, o.max_enqueued_batches), (8, Duration::from_micros(250), 1, 3));
        assert_eq!(o.allowed_batch_sizes, [4, 8]);
    }

    #[test]
    fn refuses_what_tf_serving_refuses() {
        let err = |t: &str| format!("{:#}", parse(t, defaults()).unwrap_err());
        assert!(err("max_batch_sise { value: 8 }").contains("unknown batching parameter 'max_batch_sise'"));
        assert!(err("max_batch_size { value: 8 }\nallowed_batch_sizes: 4").contains("must equal max_batch_size"));
        assert!(err("num_batch_threads { value: x }").contains("num_batch_threads must be a whole number"));
        assert!(err("max_batch_size 8").contains("line 1: cannot read"));
    }
}
