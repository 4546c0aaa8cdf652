//! [`Request`]: what a method handler receives.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kite_core::dnode::{FromArg, FromArgs};
use kite_core::{Args, Auth, Kite as KiteIdentity};
use tokio_util::sync::CancellationToken;

use crate::client::Client;

/// A call to one of our methods.
///
/// Pre handlers, the handler and post handlers of one call see clones of the same request and
/// share its extensions ([`Request::insert`], [`Request::get`]); a method without pre, post or final handlers gets the
/// request itself.
#[derive(Clone)]
pub struct Request {
    /// The method name.
    pub method: String,
    /// A random id (16 hex chars), put in the `id` of errors this call returns.
    pub id: String,
    /// The arguments (`withArgs`), always a list.
    pub args: Args,
    /// The caller's identity as it declared it, with `username` replaced by the authenticated
    /// username. Shared by the requests of one connection.
    pub caller: Arc<KiteIdentity>,
    /// The authenticated username (the declared one when authentication is disabled).
    pub username: String,
    /// The credentials the caller sent (shared by the requests of a connection that repeat them).
    pub auth: Option<Arc<Auth>>,
    /// The connection the call came on: call the caller's methods with it.
    pub client: Client,
    /// Cancelled when that connection ends.
    pub context: CancellationToken,
    /// This kite's identity.
    pub local: Arc<KiteIdentity>,
    extensions: Arc<Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("id", &self.id)
            .field("args", &self.args)
            .field("caller", &self.caller)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Request {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        method: String,
        id: String,
        args: Args,
        caller: Arc<KiteIdentity>,
        auth: Option<Arc<Auth>>,
        client: Client,
        context: CancellationToken,
        local: Arc<KiteIdentity>,
    ) -> Self {
        Request {
            method,
            id,
            username: caller.username.clone(),
            args,
            caller,
            auth,
            client,
            context,
            local,
            extensions: Arc::default(),
        }
    }

    /// Decodes the only argument (see [`kite_core::Value::one`]): any serde type, or a
    /// [`kite_core::Callback`].
    pub fn arg<T: FromArg>(&self) -> Result<T, kite_core::KiteError> {
        self.args.one()
    }

    /// Decodes all arguments into a tuple of serde types and [`kite_core::Callback`]s, or a
    /// `Vec` (see [`kite_core::Value::args`]): `let (n, f): (f64, Callback) = req.args()?`.
    pub fn args<T: FromArgs>(&self) -> Result<T, kite_core::KiteError> {
        self.args.args()
    }

    /// The verifier of `kiteKey` credentials of the kite serving this request (what
    /// [`crate::Kite::kite_key_verifier`] answers), for an authenticator
    /// ([`crate::Kite::authenticator`]) of kite keys that delegates to it.
    pub fn kite_key_verifier(&self) -> Option<Arc<crate::auth::KiteKeyVerifier>> {
        self.client.0.kite.kite_key_verifier()
    }

    /// Stores a value for later handlers of the same call (Go passes values down the chain
    /// through `Request.Context`).
    pub fn insert<T: Any + Send + Sync>(&self, value: T) {
        self.extensions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// A value stored by an earlier handler of the same call.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let v = self
            .extensions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&TypeId::of::<T>())
            .cloned()?;
        v.downcast().ok()
    }
}
