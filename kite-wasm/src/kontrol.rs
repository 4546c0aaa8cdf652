//! [`Kontrol`]: finding kites through a Kontrol and getting tokens to call them.

use std::rc::Rc;

use js_sys::{Array, Function, Object, Promise};
use kite_core::kontrol::{GetKitesResult, KiteWithToken, WatchEvent};
use kite_core::tree::Tree;
use kite_core::{Auth, ErrorKind, KiteError};
use wasm_bindgen::prelude::*;

use crate::convert::{self, Js};
use crate::error;
use crate::kite::{Inner, Kite, Renewer};
use crate::options::{Options, get};

/// A client of Kontrol, the registry.
///
/// ```js
/// const kontrol = new Kontrol({ url: 'http://localhost:4000/kite', auth: { type: 'kiteKey', key } });
/// const [math] = await kontrol.fetchKites({ query: { name: 'math' } });
/// math.connect();
/// console.log(await math.tell('square', 4)); // 16
/// ```
#[wasm_bindgen]
pub struct Kontrol {
    pub(crate) kite: Rc<Inner>,
}

impl std::fmt::Debug for Kontrol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kontrol")
            .field("url", &self.kite.options.url)
            .finish_non_exhaustive()
    }
}

#[wasm_bindgen]
impl Kontrol {
    /// `new Kontrol(url | options)`: the options of a [`Kite`] (usually `url` and `auth`
    /// with a kite key). Kites it returns inherit `transports`, `timeout` and the identity.
    #[wasm_bindgen(constructor)]
    pub fn new(options: JsValue) -> Result<Kontrol, JsValue> {
        Kite::install_tell();
        let options = Options::from_js(&options)?;
        let auto = options.auto_connect;
        let kite = Inner::new(options)?;
        if auto {
            kite.connect();
        }
        Ok(Kontrol { kite })
    }

    /// The connection to Kontrol itself (events, `tell`, `disconnect`).
    #[wasm_bindgen(getter)]
    pub fn kite(&self) -> Kite {
        Kite::from_inner(self.kite.clone())
    }

    /// Connects to Kontrol.
    pub fn connect(&self) {
        self.kite.connect();
    }

    /// Disconnects from Kontrol.
    pub fn disconnect(&self) {
        self.kite.disconnect(false);
    }

    /// `getKites`: resolves with unconnected [`Kite`]s (token authentication, renewed through
    /// this Kontrol before it expires and when a call is refused with `token is expired`).
    /// `args` is `{query: {username, environment, name, version, region, hostname, id}}`.
    #[wasm_bindgen(js_name = fetchKites)]
    pub fn fetch_kites(&self, args: JsValue) -> Promise {
        let kontrol = self.kite.clone();
        crate::promise(async move { fetch_list(&kontrol, &args, None).await })
    }

    /// Like `fetchKites`, resolving with the first kite found.
    #[wasm_bindgen(js_name = fetchKite)]
    pub fn fetch_kite(&self, args: JsValue) -> Promise {
        let kontrol = self.kite.clone();
        crate::promise(async move {
            let (kites, _) = fetch(&kontrol, &args, None)
                .await
                .map_err(|e| error::to_js(&e))?;
            kites.into_iter().next().map(JsValue::from).ok_or_else(|| {
                error::to_js(&KiteError::generic(format!(
                    "No kite found for query: {}",
                    query_text(&args)
                )))
            })
        })
    }

    /// `getToken` for one kite (an identity object, or a `Kite` from `fetchKites`): resolves
    /// with a token string.
    #[wasm_bindgen(js_name = getToken)]
    pub fn get_token(&self, kite: JsValue) -> Promise {
        let kontrol = self.kite.clone();
        crate::promise(async move {
            let identity = get(&kite, "remote").unwrap_or(kite);
            let args =
                convert::list_to_wire(std::iter::once(identity)).map_err(|e| error::to_js(&e))?;
            kontrol
                .call("getToken", args, kontrol.options.timeout_ms)
                .await
                .map_err(|e| error::to_js(&e))
        })
    }

    /// `getKites` with a watch: `handler({action, kite, url, token, remote})` is called each
    /// time a matching kite registers (`REGISTER`, with `remote` an unconnected `Kite`) or
    /// goes away (`DEREGISTER`), until this Kontrol connection ends. Resolves with the kites
    /// found now.
    #[wasm_bindgen(js_name = watchKites)]
    pub fn watch_kites(&self, args: JsValue, handler: Function) -> Promise {
        let kontrol = self.kite.clone();
        let weak = Rc::downgrade(&self.kite);
        let on_event = Closure::<dyn Fn(JsValue)>::new(move |wrapped: JsValue| {
            let Some(kontrol) = weak.upgrade() else {
                return;
            };
            // Our Kontrol sends `{result: event}` (or `{error}`), as Go's watcher does.
            let event = get(&wrapped, "result").unwrap_or(wrapped);
            let parsed = match WatchEvent::from_tree(&Js(event.clone())) {
                Ok(parsed) => parsed,
                Err(why) => {
                    let text = Js(event).stringify();
                    kontrol.events.emit(
                        "error",
                        &[error::to_js(&KiteError::generic(format!(
                            "unreadable watch event ({why}): {text}"
                        )))],
                    );
                    return;
                }
            };
            if parsed.action == "REGISTER" && !parsed.url.is_empty() {
                let found = KiteWithToken {
                    kite: parsed.kite.clone(),
                    url: parsed.url.clone(),
                    key_id: String::new(),
                    token: parsed.token.clone(),
                };
                if let Ok(kite) = child(&kontrol, found) {
                    error::set(&event, "remote", &JsValue::from(kite));
                }
            }
            if let Err(e) = handler.call1(&JsValue::NULL, &event) {
                kontrol.options.log.at(
                    crate::extras::level::ERROR,
                    || "a watchKites handler threw".to_owned(),
                    &e,
                );
            }
        });
        let callback = on_event.into_js_value();
        crate::promise(async move { fetch_list(&kontrol, &args, Some(callback)).await })
    }
}

/// [`fetch`] as what a promise resolves with: an array of `Kite`s, or a `KiteError`.
async fn fetch_list(
    kontrol: &Rc<Inner>,
    args: &JsValue,
    watch: Option<JsValue>,
) -> Result<JsValue, JsValue> {
    let (kites, watcher) = fetch(kontrol, args, watch)
        .await
        .map_err(|e| error::to_js(&e))?;
    let list: Array = kites.into_iter().map(JsValue::from).collect();
    // Kite.js's Kontrol answered a watch with the id `cancelWatcher` takes.
    if let Some(id) = watcher {
        error::set(&list, "watcherID", &id);
    }
    Ok(list.into())
}

/// `getKites` with `args` (and a watch callback), as unconnected kites, and the `watcherID` of
/// the answer if it has one.
async fn fetch(
    kontrol: &Rc<Inner>,
    args: &JsValue,
    watch: Option<JsValue>,
) -> Result<(Vec<Kite>, Option<JsValue>), KiteError> {
    let request = Object::new();
    if args.is_object() {
        Object::assign(&request, args.unchecked_ref());
    }
    if let Some(watch) = watch {
        error::set(&request, "watchCallback", &watch);
    }
    let wire = convert::list_to_wire(std::iter::once(JsValue::from(request)))?;
    let answer = kontrol
        .call("getKites", wire, kontrol.options.timeout_ms)
        .await?;
    let watcher = get(&answer, "watcherID");
    let answer = Js(answer);
    let result = if answer.is_null() {
        None
    } else {
        Some(GetKitesResult::from_tree(&answer).map_err(|why| {
            KiteError::new(
                ErrorKind::InvalidResponse,
                format!("getKites answered an unexpected shape: {why}"),
            )
        })?)
    };
    let Some(result) = result else {
        return Err(KiteError::generic(format!(
            "No kite found for query: {}",
            query_text(args)
        )));
    };
    let kites = result
        .kites
        .into_iter()
        .map(|found| child(kontrol, found).map_err(|e| error::from_js(&e)))
        .collect::<Result<_, _>>()?;
    Ok((kites, watcher))
}

/// An unconnected kite for a `getKites` answer, whose token this Kontrol renews.
fn child(kontrol: &Rc<Inner>, found: KiteWithToken) -> Result<Kite, JsValue> {
    let mut options = kontrol.options.clone();
    options.url = found.url;
    options.auth = Some(Auth::new("token", found.token));
    options.auto_connect = false;
    options.api = JsValue::UNDEFINED;
    options.authenticate = None;
    // A Kontrol reached over a given connection: its kites are dialed.
    if options.connection.take().is_some() {
        options.auto_reconnect = true;
        options.transports = crate::transport::TransportKind::sockjs_default();
        if options.url.starts_with("ws") {
            options.transports = vec![crate::transport::TransportKind::RawWebSocket];
        }
    }
    // A ws:// Kontrol URL does not make its kites raw-websocket ones.
    if options.url.starts_with("http") {
        options
            .transports
            .retain(|k| *k != crate::transport::TransportKind::RawWebSocket);
        if options.transports.is_empty() {
            options.transports = crate::transport::TransportKind::sockjs_default();
        }
    }
    let inner = Inner::new(options)?;
    *inner.remote.borrow_mut() = Some(found.kite.clone());
    let weak = Rc::downgrade(kontrol);
    let target = found.kite;
    let renewer: Renewer = Rc::new(move || {
        let kontrol = weak.upgrade();
        let target = target.clone();
        Box::pin(async move {
            let kontrol = kontrol.ok_or_else(KiteError::disconnect)?;
            let args = convert::list_to_wire(std::iter::once(target.to_tree::<Js>().0))?;
            let answer = kontrol
                .call("getToken", args, kontrol.options.timeout_ms)
                .await?;
            answer.as_string().ok_or_else(|| {
                KiteError::new(
                    ErrorKind::InvalidResponse,
                    "getToken answered something that is not a token",
                )
            })
        })
    });
    *inner.renewer.borrow_mut() = Some(renewer);
    Ok(Kite::from_inner(inner))
}

/// A query as Kite.js printed it: `username/environment/name/version/region/hostname/id`.
fn query_text(args: &JsValue) -> String {
    let query = get(args, "query").unwrap_or(JsValue::UNDEFINED);
    let mut text = String::new();
    for (i, key) in kite_core::identity::KEY_ORDER.iter().enumerate() {
        if i > 0 {
            text.push('/');
        }
        if let Some(value) = get(&query, key).and_then(|v| v.as_string()) {
            text.push_str(&value);
        }
    }
    text
}
