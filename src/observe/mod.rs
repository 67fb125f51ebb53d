//! Watching training: TensorBoard summary ops in the graph ([`tensorboard`]), event files read
//! back ([`events`]), the loss and accuracy curves as a PNG ([`plot`]) and a confusion matrix as
//! one ([`confusion`]).

pub mod confusion;
pub mod events;
pub mod plot;
pub mod tensorboard;
