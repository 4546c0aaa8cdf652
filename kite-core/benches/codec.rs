//! Codec benchmarks: what one call costs in kite-core, each side of the wire.
//!
//! Run with `cargo bench -p kite-core --bench codec` (figures in `docs/BENCHMARKS.md`);
//! `cargo test -p kite-core --benches` runs each once as a smoke test.

// criterion's macros define undocumented public functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kite_core::dnode::{CallbackSink, IntoValue, Value};
use kite_core::sockjs::{self, Frame};
use kite_core::{Callback, Connection, Incoming, Kite, KiteError, RequestHead, value};
use serde::{Deserialize, Serialize};

/// The argument list of a call, as the native client makes it.
fn args(v: impl IntoValue) -> Value {
    v.into_value().unwrap().into_list()
}

struct Nowhere;
impl CallbackSink for Nowhere {
    fn invoke(&self, _id: u64, _args: Value) -> Result<(), KiteError> {
        Ok(())
    }
}

/// A caller with all seven identity fields filled, as a real kite sends them.
fn caller() -> Kite {
    Kite {
        username: "devrim".into(),
        environment: "production".into(),
        name: "second".into(),
        version: "1.0.0".into(),
        region: "eu-west-1".into(),
        hostname: "worker-17.example.com".into(),
        id: "0b5e4d6c-2f7a-4b51-9f3e-3c1d2a9b8e71".into(),
    }
}

/// The dnode text of `square(4)` from `caller()`.
fn square_request() -> String {
    let mut conn: Connection<()> = Connection::new();
    let head = RequestHead::new(&caller(), None);
    conn.request_with_head("square", &head, args((4.0,)), ())
        .unwrap()
        .1
}

fn request(c: &mut Criterion) {
    let sink: Arc<dyn CallbackSink> = Arc::new(Nowhere);
    let head = RequestHead::new(&caller(), None);
    let mut g = c.benchmark_group("request");
    g.bench_function("encode square (client)", |b| {
        let mut conn: Connection<()> = Connection::new();
        b.iter(|| {
            let (id, text) = conn
                .request_with_head("square", &head, args((black_box(4.0),)), ())
                .unwrap();
            conn.cancel(id);
            text
        })
    });
    g.bench_function("encode square quoted, as SockJS clients send it", |b| {
        let mut conn: Connection<()> = Connection::new();
        b.iter(|| {
            let (id, text) = conn
                .request_quoted("square", &head, args((black_box(4.0),)), ())
                .unwrap();
            conn.cancel(id);
            text
        })
    });
    let text = square_request();
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("decode square and its argument (server)", |b| {
        let mut conn: Connection<()> = Connection::new();
        b.iter(|| {
            let Ok(Incoming::Request(req)) = conn.receive(black_box(&text), &sink) else {
                unreachable!()
            };
            req.args.one::<f64>().unwrap()
        })
    });
    g.finish();
}

fn response(c: &mut Criterion) {
    let sink: Arc<dyn CallbackSink> = Arc::new(Nowhere);
    let mut g = c.benchmark_group("response");
    g.bench_function("encode 16 (server)", |b| {
        let mut conn: Connection<()> = Connection::new();
        b.iter(|| conn.respond(7, Ok(Value::from_json(black_box(16.0).into()))))
    });
    g.bench_function("decode 16 (client)", |b| {
        let text = r#"{"method":0,"arguments":[{"error":null,"result":16}],"callbacks":{}}"#;
        b.iter_batched(
            // Each answer finds its call waiting, as on a live connection.
            || {
                let mut conn: Connection<u32> = Connection::new();
                conn.request("square", &Kite::default(), None, Value::null(), 1)
                    .unwrap();
                conn
            },
            |mut conn| {
                let Ok(Incoming::Response { result, .. }) = conn.receive(text, &sink) else {
                    unreachable!()
                };
                result.unwrap().decode::<f64>().unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// The data of arguments with functions inside, as a user writes them.
#[derive(Serialize, Deserialize)]
struct Job {
    name: String,
    sizes: Vec<u32>,
}

fn callbacks(c: &mut Criterion) {
    let sink: Arc<dyn CallbackSink> = Arc::new(Nowhere);
    let job = Job {
        name: "resize".into(),
        sizes: vec![16, 32, 64],
    };
    let (on_progress, on_done) = (Callback::new(|_| {}), Callback::new(|_| {}));
    let build = |job: &Job| value!([{"name": &job.name, "sizes": &job.sizes, "onProgress": &on_progress, "onDone": &on_done}]);
    let mut g = c.benchmark_group("callbacks");
    g.bench_function("build a value with two functions", |b| {
        b.iter(|| build(black_box(&job)))
    });
    let mut conn: Connection<()> = Connection::new();
    let head = RequestHead::new(&caller(), None);
    let text = conn
        .request_with_head("longJob", &head, build(&job), ())
        .unwrap()
        .1;
    g.bench_function(
        "receive two functions (decode the data, take the functions)",
        |b| {
            let mut server: Connection<()> = Connection::new();
            b.iter(|| {
                let Ok(Incoming::Request(req)) = server.receive(black_box(&text), &sink) else {
                    unreachable!()
                };
                let job: Job = req.args.one().unwrap();
                let progress = req
                    .args
                    .callback_at(&[0.into(), "onProgress".into()])
                    .unwrap();
                let done = req.args.callback_at(&[0.into(), "onDone".into()]).unwrap();
                (job, progress, done)
            })
        },
    );
    g.finish();
}

/// The dnode text of `square(4)` carrying a token of `len` base64 characters, as a caller
/// authenticated by Kontrol sends it (an RS256 token is about 600).
fn square_request_with_token(len: usize) -> String {
    let mut conn: Connection<()> = Connection::new();
    let token: String = "eyJhbGciOiJSUzI1NiJ9-_".chars().cycle().take(len).collect();
    let auth = kite_core::Auth::new("token", token);
    let head = RequestHead::new(&caller(), Some(&auth));
    conn.request_with_head("square", &head, args((4.0,)), ())
        .unwrap()
        .1
}

fn sockjs_frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("sockjs");
    let with_token = square_request_with_token(600);
    let client_frame = sockjs::encode_client_frame([with_token.as_str()]);
    g.bench_function("encode client frame with token/1", |b| {
        b.iter(|| sockjs::encode_client_frame([black_box(with_token.as_str())]))
    });
    g.bench_function("decode client frame with token/1", |b| {
        b.iter(|| sockjs::decode_client_frame(black_box(&client_frame)).unwrap())
    });
    let msg = square_request();
    for n in [1usize, 64] {
        let msgs: Vec<String> = vec![msg.clone(); n];
        let client_frame = sockjs::encode_client_frame(msgs.iter().map(String::as_str));
        let server_frame = sockjs::encode_messages(msgs.iter().map(String::as_str));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("encode a[...]", n), &msgs, |b, msgs| {
            let mut out = Vec::new();
            b.iter(|| {
                out.clear();
                sockjs::encode_messages_into(&mut out, msgs.iter().map(String::as_str));
                out.len()
            })
        });
        g.bench_with_input(
            BenchmarkId::new("decode a[...]", n),
            &server_frame,
            |b, f| b.iter(|| Frame::decode(black_box(f)).unwrap()),
        );
        g.bench_with_input(
            BenchmarkId::new("encode client frame", n),
            &msgs,
            |b, msgs| b.iter(|| sockjs::encode_client_frame(msgs.iter().map(String::as_str))),
        );
        g.bench_with_input(
            BenchmarkId::new("decode client frame", n),
            &client_frame,
            |b, f| b.iter(|| sockjs::decode_client_frame(black_box(f)).unwrap()),
        );
    }
    g.finish();
}

criterion_group!(benches, request, response, callbacks, sockjs_frames);
criterion_main!(benches);
