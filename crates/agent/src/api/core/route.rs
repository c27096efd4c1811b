//! One HTTP route of the API port, as the route table ([`crate::api::http::routes`])
//! lists it: the router is built from that table, and the API-key test walks the same
//! list, so no route can be missed by either.

use std::sync::Arc;

use axum::routing::MethodRouter;

use crate::api::App;

/// A route: its method, path and handler.
pub struct ApiRoute {
    pub method: &'static str,
    pub path: &'static str,
    pub handler: MethodRouter<Arc<App>>,
}

impl ApiRoute {
    pub fn new(method: &'static str, path: &'static str, handler: MethodRouter<Arc<App>>) -> Self {
        Self {
            method,
            path,
            handler,
        }
    }
}
