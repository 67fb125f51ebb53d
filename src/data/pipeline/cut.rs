//! A cluster's part of each batch: every worker's pipeline yields the one process's batches (the
//! same files, order, crops and failed files), and each worker's step takes part `part` of
//! `parts` of every batch, as `crate::train::split_part` cuts a list of indices: contiguous, sizes
//! differing by at most one, the last partial batch included. The part is cut in the graph from
//! the batch as it comes (its size is only known then), and so is its share of the batch, which
//! weights its loss and gradients.

use anyhow::Result;
use tensorflow::{DataType, Output, Scope, SessionRunArgs, Shape, Tensor, ops};

use super::raw::{In, raw_op_on};

/// The handles of the cut.
#[derive(Clone)]
pub struct Cut {
    /// Which part, and of how many (fed by each step; by default 0 of 1: the whole batch, as
    /// validation reads it).
    pub part: Output,
    pub parts: Output,
    /// The whole batch's example indices.
    pub batch_indices: Output,
    /// The part's share of the batch (its rows / the batch's), float.
    pub weight: Output,
}

impl Cut {
    /// Cuts `next` (images [N, ...], labels [N], indices [N]): the part's three tensors, and the
    /// handles; on `device`.
    pub fn build(s: &mut Scope, device: &str, next: &[Output]) -> Result<(Vec<Output>, Cut)> {
        let scalar = || Shape::from(Some(vec![]));
        let part: Output =
            ops::PlaceholderWithDefault::new().dtype(DataType::Int32).shape(scalar()).build(ops::constant(0i32, s)?, &mut s.with_op_name("part"))?.into();
        let parts: Output =
            ops::PlaceholderWithDefault::new().dtype(DataType::Int32).shape(scalar()).build(ops::constant(1i32, s)?, &mut s.with_op_name("parts"))?.into();
        let n: Output = ops::Size::new().out_type(DataType::Int32).build(next[2].clone(), s)?.into();
        let q = ops::floor_div(n.clone(), parts.clone(), s)?;
        let r = ops::floor_mod(n.clone(), parts.clone(), s)?;
        let start: Output = ops::add(ops::mul(part.clone(), q.clone(), s)?, ops::minimum(part.clone(), r.clone(), s)?, s)?.into();
        let extra = ops::Cast::new().DstT(DataType::Int32).build(ops::less(part.clone(), r, s)?, s)?;
        let len: Output = ops::add(q, extra, s)?.into();
        let mut cut = vec![];
        for (x, rank) in next.iter().zip([4, 1, 1]) {
            let (mut begin, mut size) = (vec![start.clone()], vec![len.clone()]);
            for _ in 1..rank {
                begin.push(ops::constant(0i32, s)?.into());
                size.push(ops::constant(-1i32, s)?.into());
            }
            let begin = pack(s, device, begin)?;
            let size = pack(s, device, size)?;
            cut.push(ops::slice(x.clone(), begin, size, s)?.into());
        }
        let float = |s: &mut Scope, x: Output| -> Result<Output> { Ok(ops::Cast::new().DstT(DataType::Float).build(x, s)?.into()) };
        let weight = ops::div(float(s, len)?, float(s, n)?, &mut s.with_op_name("weight"))?.into();
        Ok((cut, Cut { part, parts, batch_indices: next[2].clone(), weight }))
    }
}

/// Which part of each batch a step takes, as tensors to feed.
pub struct Part {
    part: Tensor<i32>,
    parts: Tensor<i32>,
}

impl Part {
    /// Part `part` of `parts`.
    pub fn new(part: usize, parts: usize) -> Part {
        Part { part: Tensor::from(part as i32), parts: Tensor::from(parts as i32) }
    }
}

impl Cut {
    /// Feeds which part of the batch the step takes.
    pub fn feed<'a>(&self, args: &mut SessionRunArgs<'a>, p: &'a Part) {
        args.add_feed(&self.part.operation, self.part.index, &p.part);
        args.add_feed(&self.parts.operation, self.parts.index, &p.parts);
    }
}

/// The int32 scalars `xs` as a vector.
fn pack(s: &mut Scope, device: &str, xs: Vec<Output>) -> Result<Output> {
    let n = xs.len() as i64;
    let op = raw_op_on(s, device, "Pack", vec![In::List(xs)], |nd| {
        nd.set_attr_int("N", n)?;
        nd.set_attr_type("T", DataType::Int32)?;
        Ok(())
    })?;
    Ok(op.output(0))
}
