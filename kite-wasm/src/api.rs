//! The page as a kite: the methods a remote kite may call on this connection (the `api`
//! option and [`crate::Kite::handle`]), the built-ins, and their authentication.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};

use gloo_timers::callback::Interval;
use js_sys::{Array, Function, Object, Promise};
use kite_core::connection::InFlight;
use kite_core::tree::{Tree, TreeRequest};
use kite_core::{ErrorKind, KiteError};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, spawn_local};

use crate::convert::{self, Js, Wire};
use crate::error;
use crate::kite::Inner;
use crate::options::{get, type_error};

/// Who may call a method.
#[derive(Clone)]
enum AuthRule {
    /// Anyone on the connection.
    Open,
    /// Callers whose credentials the kite's `authenticate` function accepts.
    Required,
    /// Callers whose credentials this function accepts.
    Custom(Function),
}

#[derive(Clone)]
struct Method {
    func: Function,
    auth: AuthRule,
}

/// The page's methods.
pub(crate) struct Api {
    methods: RefCell<HashMap<String, Method>>,
    authenticate: Option<Function>,
    /// Methods given without `auth` require authentication (a server's, as in Go) rather than
    /// being open (a client's, as in Kite.js).
    required_by_default: bool,
    /// A server's checks of `token`, `kiteKey` and custom credential types, used for methods
    /// that require authentication.
    #[cfg(feature = "server")]
    pub(crate) verifier: Option<Rc<crate::server::auth::Verifier>>,
}

impl Api {
    /// Reads the `api` option: `{name: function | {func, auth}}`.
    pub(crate) fn from_options(
        api: &JsValue,
        authenticate: Option<Function>,
        required_by_default: bool,
    ) -> Result<Api, JsValue> {
        let this = Api {
            methods: RefCell::new(HashMap::new()),
            authenticate,
            required_by_default,
            #[cfg(feature = "server")]
            verifier: None,
        };
        if api.is_undefined() || api.is_null() {
            return Ok(this);
        }
        if !api.is_object() {
            return Err(type_error("api must be an object of methods"));
        }
        for entry in Object::entries(api.unchecked_ref()).iter() {
            let pair: Array = entry.unchecked_into();
            let name = pair.get(0).as_string().unwrap_or_default();
            let value = pair.get(1);
            if let Some(f) = value.dyn_ref::<Function>() {
                this.set(&name, f.clone(), &JsValue::UNDEFINED)?;
            } else {
                let func = get(&value, "func")
                    .and_then(|f| f.dyn_into::<Function>().ok())
                    .ok_or_else(|| {
                        type_error(&format!("api.{name} must be a function or {{func, auth}}"))
                    })?;
                this.set(
                    &name,
                    func,
                    &get(&value, "auth").unwrap_or(JsValue::UNDEFINED),
                )?;
            }
        }
        Ok(this)
    }

    /// Adds or replaces a method.
    pub(crate) fn set(&self, name: &str, func: Function, auth: &JsValue) -> Result<(), JsValue> {
        let auth = if let Some(f) = auth.dyn_ref::<Function>() {
            AuthRule::Custom(f.clone())
        } else if auth.as_bool() == Some(true)
            || ((auth.is_undefined() || auth.is_null()) && self.required_by_default)
        {
            AuthRule::Required
        } else if auth.is_undefined() || auth.is_null() || auth.as_bool() == Some(false) {
            AuthRule::Open
        } else {
            return Err(type_error("auth must be true, false or a function"));
        };
        self.methods
            .borrow_mut()
            .insert(name.to_owned(), Method { func, auth });
        Ok(())
    }

    fn get(&self, name: &str) -> Option<Method> {
        self.methods.borrow().get(name).cloned()
    }
}

/// Sends the single answer of one request.
struct Responder {
    kite: Weak<Inner>,
    generation: u64,
    id: Option<u64>,
    done: Cell<bool>,
    /// The request's slot among the connection's calls in flight, freed with the answer.
    in_flight: RefCell<Option<InFlight>>,
}

impl Responder {
    fn reply(&self, result: Result<JsValue, KiteError>) {
        let result = result.and_then(|v| convert::to_wire(&v));
        self.send(result);
    }

    fn send(&self, result: Result<Wire, KiteError>) {
        if self.done.replace(true) {
            return;
        }
        if let (Some(inner), Some(id)) = (self.kite.upgrade(), self.id) {
            inner.respond(self.generation, id, result);
        }
        self.in_flight.borrow_mut().take();
    }
}

thread_local! {
    /// The caller's identity of the last call a method was given, and its object: every call
    /// of a connection carries the same identity, and copying an object is one call into
    /// the engine where building it is seven strings passed and seven properties set.
    static LAST_CALLER: RefCell<Option<(kite_core::identity::Kite, Object)>> = const { RefCell::new(None) };
}

/// The object of `kite`, which [`crate::extras::call_meta`] copies for each call (a method
/// may change its own).
fn caller_object(kite: &kite_core::identity::Kite) -> Object {
    LAST_CALLER.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((k, o)) if k == kite => o.clone(),
            _ => {
                let o: Object = kite.to_tree::<Js>().0.unchecked_into();
                *last = Some((kite.clone(), o.clone()));
                o
            }
        }
    })
}

/// Runs a request of the remote kite and answers it.
pub(crate) fn handle(inner: &Rc<Inner>, generation: u64, mut req: TreeRequest<Js>) {
    let responder = Rc::new(Responder {
        kite: Rc::downgrade(inner),
        generation,
        id: req.response,
        done: Cell::new(false),
        in_flight: RefCell::new(req.in_flight.take()),
    });
    let key = inner.key();
    let user = inner.api.get(&req.method);
    match (req.method.as_str(), user) {
        (_, Some(method)) => {
            let weak = Rc::downgrade(inner);
            spawn_local(async move {
                let Some(inner) = weak.upgrade() else { return };
                let username = match authorize(&inner, &method.auth, &req).await {
                    Ok(username) => username,
                    Err(e) => {
                        responder.send(Err(e));
                        return;
                    }
                };
                // A server's method is told who called, to call back (Go's `r.Client`).
                let peer = inner
                    .accepted
                    .then(|| JsValue::from(crate::kite::Kite::from_inner(inner.clone())));
                drop(inner);
                run(method.func, req, key, responder, username, peer);
            });
        }
        ("kite.ping", None) => responder.send(Ok(Wire::plain(Js::string("pong")))),
        ("kite.echo", None) => {
            let args = convert::args_from_wire(req.args, key, generation);
            responder.reply(Ok(args.get(0)));
        }
        ("kite.log", None) => {
            let args = convert::args_from_wire(req.args, key, generation);
            inner.events.emit("info", &[args.get(0)]);
            responder.send(Ok(Wire::plain(Js::null())));
        }
        ("kite.heartbeat", None) => {
            let args = convert::args_from_wire(req.args, key, generation);
            match heartbeat(inner, generation, &args) {
                Ok(()) => responder.send(Ok(Wire::plain(Js::null()))),
                Err(e) => responder.send(Err(e)),
            }
        }
        (method, None) => responder.send(Err(KiteError::method_not_found(method))),
    }
}

/// `kite.heartbeat(seconds, ping)`: calls `ping` now and every `seconds` until the
/// connection ends (Go's behaviour).
fn heartbeat(inner: &Rc<Inner>, generation: u64, args: &Array) -> Result<(), KiteError> {
    if args.length() == 0 {
        return Err(KiteError::argument("empty heartbeat request"));
    }
    let seconds = args
        .get(0)
        .as_f64()
        .ok_or_else(|| KiteError::argument("heartbeat interval is not a number"))?;
    let ping: Function = args
        .get(1)
        .dyn_into()
        .map_err(|_| KiteError::argument("heartbeat needs a ping function"))?;
    if seconds.is_nan() || seconds <= 0.0 {
        return Err(KiteError::argument("heartbeat interval must be positive"));
    }
    let interval = (seconds * 1000.0).min(f64::from(u32::MAX)) as u32;
    // Go pings once at once, then every interval; a new heartbeat replaces the previous one.
    // The interval lives in the kite and ends with the connection.
    let _ = ping.call0(&JsValue::NULL);
    let weak = Rc::downgrade(inner);
    let every = Interval::new(interval, move || {
        let Some(inner) = weak.upgrade() else { return };
        if inner.generation() != generation || ping.call0(&JsValue::NULL).is_err() {
            inner.heartbeat.borrow_mut().take();
        }
    });
    *inner.heartbeat.borrow_mut() = Some(every);
    Ok(())
}

/// Checks the caller's credentials against the method's rule; the authenticated username,
/// when a server's verifier or a custom check named one.
async fn authorize(
    inner: &Rc<Inner>,
    rule: &AuthRule,
    req: &TreeRequest<Js>,
) -> Result<Option<String>, KiteError> {
    let check = match rule {
        AuthRule::Open => return Ok(None),
        #[cfg(feature = "server")]
        AuthRule::Required if inner.api.verifier.is_some() => {
            let verifier = inner.api.verifier.clone();
            let verifier = verifier.as_deref().expect("checked");
            return verifier.authenticate(req).await.map(Some);
        }
        AuthRule::Required => inner.api.authenticate.clone().ok_or_else(|| {
            KiteError::new(
                ErrorKind::Authentication,
                "this method requires authentication and no authenticate function is set",
            )
        })?,
        AuthRule::Custom(f) => f.clone(),
    };
    let denied = |why: &str| KiteError::new(ErrorKind::Authentication, why.to_owned());
    let Some(auth) = &req.auth else {
        return Err(denied("No authentication information is provided"));
    };
    let verdict = ask(&check, auth, req).await?;
    if let Some(username) = verdict.as_string() {
        Ok(Some(username))
    } else if verdict.is_truthy() {
        Ok(None)
    } else {
        Err(denied("access denied"))
    }
}

/// Asks an authentication check about a request's credentials: `check(authentication,
/// kite)`, its answer awaited when it is a promise; a throw or rejection is the error.
pub(crate) async fn ask(
    check: &Function,
    auth: &kite_core::Auth,
    req: &TreeRequest<Js>,
) -> Result<JsValue, KiteError> {
    let credentials = auth.to_tree::<Js>().0;
    let caller = req.kite.to_tree::<Js>().0;
    let verdict = check
        .call2(&JsValue::NULL, &credentials, &caller)
        .map_err(|e| error::from_js(&e))?;
    match verdict.dyn_into::<Promise>() {
        Ok(p) => JsFuture::from(p).await.map_err(|e| error::from_js(&e)),
        Err(v) => Ok(v),
    }
}

/// Calls the page's function as Kite.js did — `func(...args, callback, {kite, authentication,
/// method})`, with `username` (the authenticated user) and, on a server, `peer` (the caller's
/// connection, to call back) — and answers with its return value (or the value of the promise
/// it returns). A function that declares the callback parameter and returns `undefined`
/// answers by calling `callback(error, result)` instead.
fn run(
    func: Function,
    req: TreeRequest<Js>,
    key: u64,
    responder: Rc<Responder>,
    username: Option<String>,
    peer: Option<JsValue>,
) {
    let credentials = req
        .auth
        .as_ref()
        .map_or(JsValue::NULL, |a| a.to_tree::<Js>().0);
    // One call into JavaScript, where setting each member from here was one call each.
    let meta = crate::extras::call_meta(
        username.as_deref(),
        &peer.unwrap_or(JsValue::UNDEFINED),
        &caller_object(&req.kite),
        &credentials,
        &req.method,
    );
    let args = convert::args_from_wire(req.args, key, responder.generation);
    let argc = args.length();
    let r = responder.clone();
    let callback =
        Closure::<dyn Fn(JsValue, JsValue)>::new(move |err: JsValue, result: JsValue| {
            if err.is_null() || err.is_undefined() {
                r.reply(Ok(result));
            } else {
                r.reply(Err(error::from_js(&err)));
            }
        });
    args.push(&callback.into_js_value());
    args.push(&meta);
    let returned = match func.apply(&JsValue::NULL, &args) {
        Ok(v) => v,
        Err(thrown) => return responder.reply(Err(error::from_js(&thrown))),
    };
    match returned.dyn_into::<Promise>() {
        Ok(promise) => spawn_local(async move {
            match JsFuture::from(promise).await {
                Ok(v) => responder.reply(Ok(v)),
                Err(e) => responder.reply(Err(error::from_js(&e))),
            }
        }),
        Err(v) if !v.is_undefined() || func.length() <= argc => responder.reply(Ok(v)),
        Err(_) => {} // answered through the callback
    }
}
