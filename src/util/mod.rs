//! Small helpers with no knowledge of the network: the seeded generator ([`rng`]) and atomic file
//! writes ([`fsutil`]).

pub mod fsutil;
pub mod rng;
