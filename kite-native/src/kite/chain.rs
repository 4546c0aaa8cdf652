//! The handler chain: registering methods and the kite-wide pre, post and final handlers, and
//! running a request through them (`impl Dispatch for Client`).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::FutureExt;
use kite_core::ErrorKind;
use kite_core::KiteError;
use kite_core::dnode::{IntoValue, Value};
use kite_core::envelope::response_args;
use tracing::{debug, warn};

use super::{Kite, KiteInner, read, request_id, run_hook, write};
use crate::client::Client;
use crate::link::{Dispatch, Link};
use crate::method::{BoxFuture, DynHandler, FinalFn, Method, MethodHandling, Plan, into_handler};
use crate::request::Request;

#[derive(Default)]
pub(super) struct Chain {
    pre: Vec<DynHandler>,
    post: Vec<DynHandler>,
    finals: Vec<FinalFn>,
    handling: MethodHandling,
}

impl Kite {
    /// Serves `name` with an async handler. Re-registering a name replaces it. The returned
    /// [`Method`] sets options: authentication, throttling, pre/post/final handlers.
    /// Methods require authentication unless `Config::disable_authentication` is set or
    /// [`Method::disable_authentication`] is called ([`Method::require_authentication`] overrides
    /// both).
    pub fn handle<F, Fut, T, E>(&self, name: &str, f: F) -> Method
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: IntoValue + 'static,
        E: Into<KiteError> + 'static,
    {
        let method = Method::new(name, into_handler(f), self.0.config.disable_authentication);
        write(&self.0.registry)
            .methods
            .insert(name.to_owned(), method.clone());
        method
    }

    /// The method registered as `name`.
    pub fn method(&self, name: &str) -> Option<Method> {
        read(&self.0.registry).methods.get(name).cloned()
    }

    /// Runs `f` before every method's handler (after the method's own pre handlers).
    pub fn pre_handle<F, Fut, T, E>(&self, f: F)
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: IntoValue + 'static,
        E: Into<KiteError> + 'static,
    {
        write(&self.0.registry).chain.pre.push(into_handler(f));
    }

    /// Runs `f` after every method's handler (after the method's own post handlers).
    pub fn post_handle<F, Fut, T, E>(&self, f: F)
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: IntoValue + 'static,
        E: Into<KiteError> + 'static,
    {
        write(&self.0.registry).chain.post.push(into_handler(f));
    }

    /// Runs `f` last for every method, after the method's own final functions.
    pub fn final_func<F>(&self, f: F)
    where
        F: Fn(&Request, Result<Value, KiteError>) -> Result<Value, KiteError>
            + Send
            + Sync
            + 'static,
    {
        write(&self.0.registry).chain.finals.push(Arc::new(f));
    }

    /// Chooses which result a chain returns (default [`MethodHandling::ReturnMethod`]).
    pub fn set_method_handling(&self, handling: MethodHandling) {
        write(&self.0.registry).chain.handling = handling;
    }
}

impl KiteInner {
    async fn run_method(
        self: &Arc<Self>,
        client: &Client,
        link: &Arc<Link>,
        request: kite_core::Request,
        id: &str,
    ) -> Result<Value, KiteError> {
        let Some(method) = read(&self.registry).methods.get(&request.method).cloned() else {
            return Err(KiteError::method_not_found(&request.method));
        };
        let plan = method.plan();
        let mut req = Request::new(
            request.method,
            id.to_owned(),
            request.args,
            request.kite,
            request.auth,
            client.clone(),
            link.context.clone(),
            self.identity.clone(),
        );
        let skip = plan.auth_disabled || self.config.disable_authentication || client.is_trusted();
        if plan.auth_required || !skip {
            let username = self.authenticate(&req).await?;
            if req.caller.username != username {
                Arc::make_mut(&mut req.caller)
                    .username
                    .clone_from(&username);
            }
            req.username = username;
        }
        if plan.throttled && !method.admit() {
            return Err(KiteError::request_limit());
        }
        self.run_chain(&method, plan, req, id).await
    }

    async fn run_chain(
        &self,
        method: &Method,
        plan: Plan,
        req: Request,
        id: &str,
    ) -> Result<Value, KiteError> {
        let (pre, post, finals, handling) = {
            let registry = read(&self.registry);
            let kite = &registry.chain;
            let cat = |mut a: Vec<DynHandler>, b: &[DynHandler]| -> Vec<DynHandler> {
                a.extend(b.iter().cloned());
                a
            };
            let mut finals = plan.finals;
            finals.extend(kite.finals.iter().cloned());
            (
                cat(plan.pre, &kite.pre),
                cat(plan.post, &kite.post),
                finals,
                kite.handling,
            )
        };
        let caught = |panic: Box<dyn std::any::Any + Send>| {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "handler panicked".to_owned());
            warn!(method = %method.name(), %id, panic = %msg, "handler panicked");
            Err(KiteError::generic(msg))
        };
        if pre.is_empty() && post.is_empty() && finals.is_empty() {
            // The usual case: the handler alone, which takes the request as it is.
            let outcome = std::panic::AssertUnwindSafe((method.handler)(req));
            return outcome.catch_unwind().await.unwrap_or_else(caught);
        }
        let outcome = async {
            let mut first: Option<Value> = None;
            let mut note = |v: &Value| {
                if first.is_none() && !v.is_null() {
                    first = Some(v.clone());
                }
            };
            for h in &pre {
                note(&h(req.clone()).await?);
            }
            let main = (method.handler)(req.clone()).await?;
            note(&main);
            let mut latest = None;
            for h in &post {
                let v = h(req.clone()).await?;
                note(&v);
                latest = Some(v);
            }
            Ok(match handling {
                MethodHandling::ReturnMethod => main,
                MethodHandling::ReturnFirst => first.unwrap_or(main),
                MethodHandling::ReturnLatest => latest.unwrap_or(main),
            })
        };
        let result = std::panic::AssertUnwindSafe(outcome)
            .catch_unwind()
            .await
            .unwrap_or_else(caught);
        finals.iter().fold(result, |r, f| f(&req, r))
    }

    async fn serve_request(
        self: Arc<Self>,
        client: Client,
        link: Arc<Link>,
        mut request: kite_core::Request,
    ) {
        if client.0.accepted
            && !client.0.first_request_seen.load(Ordering::Relaxed)
            && !client.0.first_request_seen.swap(true, Ordering::SeqCst)
        {
            client.set_remote((*request.kite).clone());
            let hooks = read(&self.registry).hooks.first_request.clone();
            for h in hooks {
                run_hook(&h, &client);
            }
        }
        let response = request.response.take();
        // The call's slot among the connection's calls in flight, held until it is answered.
        let _in_flight = request.in_flight.take();
        let method = request.method.clone();
        let id = request_id();
        let result = self
            .run_method(&client, &link, request, &id)
            .await
            .map_err(|mut e| {
                if e.id.is_empty() && e.kind != ErrorKind::MethodNotFound {
                    e.id.clone_from(&id);
                }
                e
            });
        if let Err(e) = &result {
            debug!(%method, error = %e, "request failed");
        }
        let Some(response) = response else {
            return;
        };
        let sent = match response.remote_id() {
            Some(rid) => link.respond(rid, result),
            None => response.call_with(response_args(result)),
        };
        if let Err(e) = sent {
            debug!(%method, error = %e, "could not send the response");
        }
    }
}

impl Dispatch for Client {
    fn dispatch(&self, link: &Arc<Link>, request: Box<kite_core::Request>) -> BoxFuture<()> {
        let inner = self.0.kite.clone();
        Box::pin(inner.serve_request(self.clone(), link.clone(), *request))
    }

    fn ordered(&self) -> bool {
        self.0.kite.config.disable_concurrency
    }

    fn answered(
        &self,
        call: kite_core::session::CallId,
        result: Result<kite_core::dnode::Value, KiteError>,
    ) {
        Client::answered(self, call, result);
    }
}
