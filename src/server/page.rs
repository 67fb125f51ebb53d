//! The web page at `/`: choose or drop a photo, see its class probabilities and every layer's
//! activation picture. One static HTML file with its script inline (no build step), which calls
//! `:activations` on the served model; the model name is filled in when the page is served.

use axum::extract::State;
use axum::response::Html;

use crate::server::routes::AppState;

const PAGE: &str = include_str!("page.html");

pub async fn page(State(state): State<AppState>) -> Html<String> {
    let name: String = state.model_name.chars().filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).collect();
    Html(PAGE.replace("{{MODEL_NAME}}", &name))
}
