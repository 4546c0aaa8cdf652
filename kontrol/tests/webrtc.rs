//! Kontrol as the WebRTC signalling relay (its kite's `Config::use_webrtc`, as Go's Kontrol
//! with `UseWebRTC`), reached by kites with `Kite::send_webrtc_request` over their Kontrol
//! connection — Go's own `TestKontrol_HandleWebRTC`, over real sockets: a kite nobody has
//! heard from is `not registered`; once it has signalled, a message reaches its
//! `kite.handleWebRTC`, whose error comes back to the sender.

use std::sync::Arc;

use kite_native::auth::KeyPair;
use kite_native::core::webrtc::{HANDLER_NAME, SignalMessage};
use kite_native::{Kite, KiteError, Request};
use kite_test_kit::kites::{local_config, serve as start};
use kite_test_kit::within;
use kontrol::server::{Kontrol, KontrolOptions};
use kontrol::storage::{MemoryStorage, Storage};

#[tokio::test]
async fn kontrol_relays_signals_between_its_kites() {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let key = KeyPair::generate(2048).unwrap();
    let mut config = local_config();
    config.use_webrtc = true;
    let kontrol = Kontrol::new(config, KontrolOptions::new("kontrol", key, ""), storage).unwrap();
    let addr = start(kontrol.kite()).await;
    let url = format!("http://{addr}/kite");

    let kite = |name: &str| {
        let mut cfg = local_config();
        cfg.apply_kite_key(
            &kite_native::kitekey::parse(&kontrol.kite_key_for("alice").unwrap()).unwrap(),
        );
        cfg.kontrol_url.clone_from(&url);
        let k = Kite::with_config(name, "1.0.0", cfg).unwrap();
        let me = name.to_owned();
        k.handle(HANDLER_NAME, move |_req: Request| {
            let me = me.clone();
            async move { Err::<(), _>(KiteError::generic(format!("{me} is called"))) }
        });
        k
    };
    let (hk1, hk2) = (kite("kite1"), kite("kite2"));
    let to = |k: &Kite| SignalMessage {
        dst: k.identity().id.clone(),
        ..SignalMessage::default()
    };

    let e = within("kite1 to kite2", hk1.send_webrtc_request(&to(&hk2)))
        .await
        .unwrap_err();
    assert!(e.message.contains("not registered"), "{e}");
    let e = within("kite2 to kite1", hk2.send_webrtc_request(&to(&hk1)))
        .await
        .unwrap_err();
    assert_eq!(e.message, "kite1 is called");
    hk1.close();
    hk2.close();
}
