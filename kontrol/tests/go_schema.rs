//! A Kontrol on Go Kontrol's own PostgreSQL schema (`PostgresSchema::Go`), over real sockets
//! and a real PostgreSQL started here: a kite registers and is found by `getKites`; a kite Go
//! Kontrol registered (a row written with Go's SQL, naming Go's key pair) is found too, with a
//! token signed by Go's pair; the configured key pair is stored under a UUID; a kite whose id
//! is not a UUID is refused with a clear error. Skipped without PostgreSQL (failing under
//! `CI=true`).

use std::sync::Arc;

use kite_native::Kite;
use kite_native::auth::KeyPair;
use kite_native::core::KontrolQuery;
use kite_test_kit::kites::{local_config, serve};
use kite_test_kit::servers::Postgres;
use kite_test_kit::within;
use kontrol::keys::KeyPairInfo;
use kontrol::server::{Kontrol, KontrolOptions};
use kontrol::storage::{PostgresConfig, PostgresSchema, PostgresStorage, Storage};
use tokio_postgres::NoTls;

/// A kite `name` holding `kite_key`, whose Kontrol is at `addr`, with id `id` if given.
fn kite_with(kite_key: &str, addr: std::net::SocketAddr, name: &str, id: Option<&str>) -> Kite {
    let mut cfg = local_config();
    cfg.apply_kite_key(&kite_native::kitekey::parse(kite_key).unwrap());
    cfg.kontrol_url = format!("http://{addr}/kite");
    cfg.environment = "test".into();
    if let Some(id) = id {
        cfg.id = id.to_owned();
    }
    Kite::with_config(name, "1.0.0", cfg).unwrap()
}

fn query(username: &str, name: &str) -> KontrolQuery {
    KontrolQuery {
        username: username.into(),
        environment: "test".into(),
        name: name.into(),
        ..Default::default()
    }
}

/// The `kid` of a JWT's header.
fn kid(jwt: &str) -> String {
    jsonwebtoken::decode_header(jwt)
        .unwrap()
        .kid
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kontrol_on_go_schema_serves_its_kites_and_go_kontrols() {
    let Some(pg) = Postgres::start() else { return };
    pg.create_database("kontrol");
    let config = PostgresConfig {
        host: "127.0.0.1".into(),
        port: pg.port(),
        user: "postgres".into(),
        dbname: "kontrol".into(),
        schema: PostgresSchema::Go,
        create_go_schema: true,
        ..PostgresConfig::default()
    };
    let storage = Arc::new(PostgresStorage::connect(config.clone()).await.unwrap());
    let (raw, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(pg.port())
        .user("postgres")
        .dbname("kontrol")
        .connect(NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);

    // What a Go Kontrol left: its key pair (`AddKey`) and a kite it registered (`Upsert`'s
    // INSERT), with Go's statements.
    let go_pair = KeyPair::generate(2048).unwrap();
    let go_key_id = uuid::Uuid::new_v4().to_string();
    let go_kite_id = uuid::Uuid::new_v4().to_string();
    raw.execute(
        "INSERT INTO kite.key (id,public,private) VALUES ($1::text::uuid,$2,$3)",
        &[
            &go_key_id,
            &go_pair.public_pem.trim(),
            &go_pair.private_pem.trim(),
        ],
    )
    .await
    .unwrap();
    raw.execute(
        "INSERT INTO kite.kite (username,environment,kitename,version,region,hostname,id,url,\
         key_id) VALUES ($1,$2,$3,$4,$5,$6,$7::text::uuid,$8,$9::text::uuid)",
        &[
            &"alice",
            &"test",
            &"go-math",
            &"1.0.0",
            &"eu",
            &"go-host",
            &go_kite_id,
            &"http://go-host:5000/kite",
            &go_key_id,
        ],
    )
    .await
    .unwrap();

    // Our Kontrol, with its own configured pair under the id `default`.
    let ours = KeyPair::generate(2048).unwrap();
    let options = KontrolOptions::new("kontrol", ours.clone(), "");
    let storage: Arc<dyn Storage> = storage;
    let k = Kontrol::new(local_config(), options, storage.clone()).unwrap();
    let addr = serve(k.kite()).await;

    // A kite registers over a real socket; another finds it.
    let math = kite_with(&k.kite_key_for("alice").unwrap(), addr, "math", None);
    within("register", math.register("http://127.0.0.1:9/math"))
        .await
        .unwrap();
    let finder = kite_with(&k.kite_key_for("carol").unwrap(), addr, "finder", None);
    let found = within("getKites", finder.get_kites(&query("alice", "math")))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].remote().id, math.identity().id);
    // Its row is Go's: found by Go's Get, live for Go's cleaner.
    let rows = raw
        .simple_query(&format!(
            "SELECT id, url, key_id FROM kite.kite WHERE (username = 'alice' AND \
             environment = 'test' AND kitename = 'math') AND updated_at >= \
             (now() at time zone 'utc') - ((INTERVAL '1 second') * 90) AND id = '{}'",
            math.identity().id
        ))
        .await
        .unwrap();
    let row = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .expect("the kite's row, as Go reads it");
    assert_eq!(row.get(1), Some("http://127.0.0.1:9/math"));
    // The configured pair is stored under a UUID (Go's kite.key takes no other), signs, and
    // is the pair the registration names.
    let owner = kite_with(&k.kite_key_for("kontrol").unwrap(), addr, "owner", None);
    let kontrol = within("kontrol", owner.kontrol()).await.unwrap();
    let pairs: Vec<KeyPairInfo> = within(
        "listKeyPairs",
        kontrol.call("listKeyPairs", (serde_json::Value::Null,)),
    )
    .await
    .unwrap();
    assert_eq!(pairs.len(), 2, "{pairs:?}");
    let mine = pairs
        .iter()
        .find(|p| p.public_key == ours.public_pem.trim())
        .unwrap();
    assert!(uuid::Uuid::try_parse(&mine.id).is_ok(), "{mine:?}");
    assert!(mine.current, "the newest pair signs: {pairs:?}");
    assert_eq!(row.get(2), Some(mine.id.as_str()));
    assert!(pairs.iter().any(|p| p.id == go_key_id && !p.current));

    // The kite Go Kontrol registered is found, with a token of Go's pair.
    let found = within("getKites", finder.get_kites(&query("alice", "go-math")))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].remote().id, go_kite_id);
    assert_eq!(found[0].url(), "http://go-host:5000/kite");
    let token = found[0].auth().expect("a token").key;
    assert_eq!(kid(&token), go_key_id);

    // A kite whose id is not a UUID: refused, saying why.
    let odd = kite_with(
        &k.kite_key_for("alice").unwrap(),
        addr,
        "odd",
        Some("not-a-uuid"),
    );
    let err = within("register", odd.register("http://127.0.0.1:9/odd"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is not a UUID"), "{err}");
    let found = within("getKites", finder.get_kites(&query("alice", "odd")))
        .await
        .unwrap();
    assert!(found.is_empty());
}
