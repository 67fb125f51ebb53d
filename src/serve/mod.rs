//! Using a trained run: accuracy and confusion matrix ([`eval`]), SavedModel export for TensorFlow
//! Serving and Python ([`export`]), and classifying image files ([`predict`]).

pub mod eval;
pub mod export;
pub mod inference;
pub mod predict;
