//! The page: `www/static`, the npm package under `/pkg/`, and `/config.json` (where Kontrol
//! is, and a kite key for the page to ask it with).

use std::path::PathBuf;

use axum::Router;
use axum::routing::get;
use serde_json::json;
use tower_http::services::ServeDir;

/// What the page is served from.
#[derive(Debug, Clone)]
pub struct Site {
    /// The repository root (holding `www/static` and `kite-wasm/pkg`).
    pub root: PathBuf,
    /// Kontrol's URL.
    pub kontrol_url: String,
    /// A kite key for the page's user (`browser`), signed by Kontrol.
    pub kite_key: String,
}

impl Site {
    /// The routes.
    pub fn router(self) -> Router {
        let config = json!({ "kontrol": self.kontrol_url, "kiteKey": self.kite_key });
        Router::new()
            .route(
                "/config.json",
                get(move || async move { axum::Json(config) }),
            )
            .nest_service("/pkg", ServeDir::new(self.root.join("kite-wasm/pkg")))
            .fallback_service(ServeDir::new(self.root.join("www/static")))
    }
}
