//! Watching training: TensorBoard summary ops in the graph ([`tensorboard`]), event files read
//! back ([`events`]), and the loss and accuracy curves as a PNG ([`plot`]).

pub mod events;
pub mod plot;
pub mod tensorboard;
