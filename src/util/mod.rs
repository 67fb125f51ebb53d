//! Small helpers with no knowledge of the network: the seeded generator ([`rng`]), atomic file
//! writes ([`fsutil`]) and work spread over threads ([`parallel`]).

pub mod fsutil;
pub mod parallel;
pub mod rng;
