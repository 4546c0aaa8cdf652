//! Methods a kite serves: handlers, per-method options and the handler chain.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kite_core::KiteError;
use kite_core::dnode::{IntoValue, Value};

use crate::request::Request;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A type-erased handler: request in, result out (a [`Value`], functions included).
pub type DynHandler = Arc<dyn Fn(Request) -> BoxFuture<Result<Value, KiteError>> + Send + Sync>;

/// A final function: sees the request and the chain's outcome, may rewrite it.
pub type FinalFn =
    Arc<dyn Fn(&Request, Result<Value, KiteError>) -> Result<Value, KiteError> + Send + Sync>;

/// Turns an async closure returning `Result<T, E>` into a [`DynHandler`].
pub fn into_handler<F, Fut, T, E>(f: F) -> DynHandler
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    T: IntoValue + 'static,
    E: Into<KiteError> + 'static,
{
    Arc::new(move |req| {
        let fut = f(req);
        Box::pin(async move {
            match fut.await {
                Ok(value) => value.into_value(),
                Err(e) => Err(e.into()),
            }
        })
    })
}

/// Which result a method with pre and post handlers returns (Go's `MethodHandling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MethodHandling {
    /// The method handler's result (default).
    #[default]
    ReturnMethod,
    /// The first non-null result among pre handlers, handler, post handlers.
    ReturnFirst,
    /// The last post handler's result (the handler's if there are none).
    ReturnLatest,
}

/// A token bucket: starts full, gains one token every `fill_interval`.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    capacity: u64,
    fill_interval: Duration,
    tokens: u64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(fill_interval: Duration, capacity: u64) -> Self {
        TokenBucket {
            capacity: capacity.max(1),
            fill_interval: fill_interval.max(Duration::from_nanos(1)),
            tokens: capacity.max(1),
            last: Instant::now(),
        }
    }

    pub(crate) fn take(&mut self) -> bool {
        let now = Instant::now();
        let gained = (now.duration_since(self.last).as_nanos() / self.fill_interval.as_nanos())
            .min(u128::from(self.capacity)) as u64;
        if gained > 0 {
            self.tokens = (self.tokens + gained).min(self.capacity);
            self.last += self.fill_interval * gained as u32;
            if self.tokens == self.capacity {
                self.last = now;
            }
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[derive(Default)]
pub(crate) struct MethodOptions {
    pub(crate) auth_disabled: bool,
    pub(crate) auth_required: bool,
    pub(crate) throttle: Option<TokenBucket>,
    pub(crate) pre: Vec<DynHandler>,
    pub(crate) post: Vec<DynHandler>,
    pub(crate) finals: Vec<FinalFn>,
}

/// A snapshot of a method's options for one call.
pub(crate) struct Plan {
    pub(crate) auth_disabled: bool,
    /// Authenticate every caller, whatever `auth_disabled`, the kite's config or the
    /// connection's trust say.
    pub(crate) auth_required: bool,
    pub(crate) throttled: bool,
    pub(crate) pre: Vec<DynHandler>,
    pub(crate) post: Vec<DynHandler>,
    pub(crate) finals: Vec<FinalFn>,
}

/// A method registered on a kite. Returned by [`crate::Kite::handle`] to set its options.
#[derive(Clone)]
pub struct Method {
    pub(crate) name: Arc<str>,
    pub(crate) handler: DynHandler,
    pub(crate) options: Arc<Mutex<MethodOptions>>,
}

impl std::fmt::Debug for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Method").field("name", &self.name).finish()
    }
}

impl Method {
    pub(crate) fn new(name: &str, handler: DynHandler, auth_disabled: bool) -> Self {
        Method {
            name: name.into(),
            handler,
            options: Arc::new(Mutex::new(MethodOptions {
                auth_disabled,
                ..MethodOptions::default()
            })),
        }
    }

    fn with_options(&self, f: impl FnOnce(&mut MethodOptions)) -> &Self {
        f(&mut self.options.lock().unwrap_or_else(|e| e.into_inner()));
        self
    }

    /// The method's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Lets callers without credentials call this method.
    pub fn disable_authentication(&self) -> &Self {
        self.with_options(|o| o.auth_disabled = true)
    }

    /// Makes every caller of this method authenticate, even where it would be skipped:
    /// [`Method::disable_authentication`] (before or after this), `Config::disable_authentication`,
    /// and trusted connections ([`crate::Client::set_trusted`]). For methods no unauthenticated
    /// peer may ever call, such as `kite.prompt`; it cannot be undone.
    pub fn require_authentication(&self) -> &Self {
        self.with_options(|o| o.auth_required = true)
    }

    /// Whether callers go without credentials: [`Method::disable_authentication`] was called or
    /// `Config::disable_authentication` is set, and not [`Method::require_authentication`].
    pub fn authentication_disabled(&self) -> bool {
        let o = self.options.lock().unwrap_or_else(|e| e.into_inner());
        o.auth_disabled && !o.auth_required
    }

    /// Limits the call rate with a token bucket of `capacity` tokens that gains one token every
    /// `fill_interval` and starts full. Calls finding it empty get `requestLimitError`. Only the
    /// first call of `throttle` counts, as in Go.
    pub fn throttle(&self, fill_interval: Duration, capacity: u64) -> &Self {
        self.with_options(|o| {
            if o.throttle.is_none() {
                o.throttle = Some(TokenBucket::new(fill_interval, capacity));
            }
        })
    }

    /// Runs `f` before the handler (after the method's earlier pre handlers, before the
    /// kite-wide ones). An error stops the chain.
    pub fn pre_handle<F, Fut, T, E>(&self, f: F) -> &Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: IntoValue + 'static,
        E: Into<KiteError> + 'static,
    {
        let h = into_handler(f);
        self.with_options(|o| o.pre.push(h))
    }

    /// Runs `f` after the handler. An error stops the chain.
    pub fn post_handle<F, Fut, T, E>(&self, f: F) -> &Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: IntoValue + 'static,
        E: Into<KiteError> + 'static,
    {
        let h = into_handler(f);
        self.with_options(|o| o.post.push(h))
    }

    /// Runs `f` last, always, with the outcome of the chain; its return value is the answer.
    pub fn final_func<F>(&self, f: F) -> &Self
    where
        F: Fn(&Request, Result<Value, KiteError>) -> Result<Value, KiteError>
            + Send
            + Sync
            + 'static,
    {
        let f: FinalFn = Arc::new(f);
        self.with_options(|o| o.finals.push(f))
    }

    /// What a call needs to know about the method's options, read under one lock.
    pub(crate) fn plan(&self) -> Plan {
        let o = self.options.lock().unwrap_or_else(|e| e.into_inner());
        Plan {
            auth_disabled: o.auth_disabled,
            auth_required: o.auth_required,
            throttled: o.throttle.is_some(),
            pre: o.pre.clone(),
            post: o.post.clone(),
            finals: o.finals.clone(),
        }
    }

    /// Takes a throttle token; `false` if the method is throttled and the bucket is empty.
    pub(crate) fn admit(&self) -> bool {
        let mut o = self.options.lock().unwrap_or_else(|e| e.into_inner());
        o.throttle.as_mut().is_none_or(TokenBucket::take)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_starts_full_and_refills() {
        let mut b = TokenBucket::new(Duration::from_secs(3600), 2);
        assert!(b.take());
        assert!(b.take());
        assert!(!b.take());
        b.last -= Duration::from_secs(3600);
        assert!(b.take());
        assert!(!b.take());
    }

    #[test]
    fn required_authentication_wins_over_disabled() {
        let handler = into_handler(|_req: Request| async { Ok::<_, KiteError>(()) });
        let m = Method::new("kite.prompt", handler, true);
        assert!(m.authentication_disabled());
        m.require_authentication();
        assert!(!m.authentication_disabled());
        m.disable_authentication();
        assert!(!m.authentication_disabled());
        let plan = m.plan();
        assert!(plan.auth_required && plan.auth_disabled);
    }
}
