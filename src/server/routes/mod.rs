//! The HTTP routes: TensorFlow Serving's REST API under `/v1/models/` ([`rest`]), the
//! activation pictures the web page draws ([`activations`]), and the page itself at `/`.
//!
//! TF Serving puts the verb after a colon in the last path segment
//! (`/v1/models/alexnet/versions/2:predict`), which a router's segment patterns cannot split, so
//! everything under `/v1/models/` goes to one handler per method and [`Target::parse`] reads the
//! path.

pub mod activations;
pub mod rest;

use std::sync::Arc;

use crate::server::batching::Runner;
use crate::server::error::ApiError;
use crate::server::model::LoadedModel;
use crate::server::request::Limits;
use crate::server::versions::Versions;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub model_name: String,
    pub versions: Arc<Versions>,
    pub runner: Runner,
    pub limits: Limits,
    pub max_body_bytes: usize,
}

/// A path under `/v1/models/`: `NAME[/versions/N][/metadata][:verb]`.
#[derive(Debug, PartialEq)]
pub struct Target {
    pub name: String,
    pub version: Option<u64>,
    pub metadata: bool,
    pub verb: Option<String>,
}

impl Target {
    pub fn parse(path: &str) -> Result<Target, ApiError> {
        let (path, verb) = match path.rsplit_once(':') {
            Some((p, v)) if !v.contains('/') => (p, Some(v.to_string())),
            _ => (path, None),
        };
        let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let bad = || ApiError::not_found(format!("no such resource: /v1/models/{path} (expected NAME[/versions/N][/metadata][:predict])"));
        let (name, rest) = parts.split_first().ok_or_else(bad)?;
        let (version, rest) = match rest {
            ["versions", v, rest @ ..] => (Some(v.parse::<u64>().map_err(|_| ApiError::bad_request(format!("version '{v}' is not a number")))?), rest),
            _ => (None, rest),
        };
        let metadata = match rest {
            [] => false,
            ["metadata"] => true,
            _ => return Err(bad()),
        };
        Ok(Target { name: name.to_string(), version, metadata, verb })
    }

    /// The served version this path asks for, or TF Serving's "Servable not found" 404.
    pub fn model(&self, state: &AppState) -> Result<Arc<LoadedModel>, ApiError> {
        find_model(state, &self.name, self.version)
    }
}

/// The served version of model `name` a request asks for (the REST path's or the gRPC
/// ModelSpec's), or TF Serving's "Servable not found" 404 / NOT_FOUND.
pub fn find_model(state: &AppState, name: &str, version: Option<u64>) -> Result<Arc<LoadedModel>, ApiError> {
    let found = if name == state.model_name { state.versions.get(version) } else { None };
    found.ok_or_else(|| {
        let request = match version {
            Some(v) => format!("Specific({name}, {v})"),
            None => format!("Latest({name})"),
        };
        ApiError::not_found(format!("Servable not found for request: {request}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_as_tf_serving_writes_them() {
        let t = Target::parse("alexnet/versions/2:predict").unwrap();
        assert_eq!(t, Target { name: "alexnet".into(), version: Some(2), metadata: false, verb: Some("predict".into()) });
        let t = Target::parse("alexnet/metadata").unwrap();
        assert!(t.metadata && t.version.is_none() && t.verb.is_none());
        assert_eq!(Target::parse("alexnet:classify").unwrap().verb.as_deref(), Some("classify"));
        assert_eq!(Target::parse("alexnet/versions/x").unwrap_err().status, 400);
        assert_eq!(Target::parse("alexnet/labels/stable").unwrap_err().status, 404);
    }
}
