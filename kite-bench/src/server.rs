//! The servers under test, each run as its own process by `kite-bench serve`: our kite, a raw
//! tokio-tungstenite echo (plain and with batched writes), and a jsonrpsee WebSocket server.
//!
//! Every server offers the same two calls: `square(n)` → `n*n`, and `echo(s)` → `s`.

use std::net::SocketAddr;

use futures_util::{FutureExt, SinkExt, StreamExt};
use kite_native::{Config, Kite, KiteError, Request};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::System;

/// Options of a served system.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Echo servers: tungstenite's read buffer size (`None`: tungstenite's default of 128 KiB).
    /// The kite: `SockJsOptions::read_buffer_size`, the most bytes a websocket reads per
    /// system call (`None`: its default).
    pub read_buffer: Option<usize>,
    /// For the kite: require tokens and accept those verified with this PEM public key.
    pub token_public_key: Option<String>,
}

/// Binds `addr`, prints `listening <addr>` on stdout, and serves `system` until killed.
pub async fn serve(
    system: System,
    addr: SocketAddr,
    options: ServeOptions,
) -> Result<(), Box<dyn std::error::Error>> {
    // The same accept queue for every system (a kite's own, deeper than tokio's default).
    let listener = kite_native::listen(addr)?;
    let local = listener.local_addr()?;
    println!("listening {local}");
    use std::io::Write;
    std::io::stdout().flush()?;
    match system {
        System::Kite => serve_kite(listener, options).await,
        System::Echo => serve_echo(listener, false, options.read_buffer).await,
        System::EchoBatched => serve_echo(listener, true, options.read_buffer).await,
        System::Jsonrpsee => serve_jsonrpsee(listener).await,
    }
}

/// The benchmark kite: `square` and `echo`, with authentication only when tokens are on.
pub fn bench_kite(config: Config) -> Result<Kite, kite_native::Error> {
    let kite = Kite::with_config("bench", "1.0.0", config)?;
    kite.handle("square", |req: Request| async move {
        let n: f64 = req.arg()?;
        Ok::<_, KiteError>(n * n)
    });
    kite.handle("echo", |req: Request| async move {
        let s: String = req.arg()?;
        Ok::<_, KiteError>(s)
    });
    Ok(kite)
}

async fn serve_kite(
    listener: TcpListener,
    options: ServeOptions,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::default();
    config.disable_authentication = options.token_public_key.is_none();
    if let Some(size) = options.read_buffer {
        config.sockjs.read_buffer_size = size;
    }
    // Every benchmark client comes from 127.0.0.1: one address may use the whole budgets.
    let limits = &mut config.limits;
    limits.max_connections_per_ip = limits.max_connections;
    limits.max_websockets_per_ip = limits.max_websockets;
    limits.max_sessions_per_ip = limits.max_sessions;
    let kite = bench_kite(config)?;
    if let Some(pem) = options.token_public_key {
        crate::token::install(&kite, &pem)?;
    }
    kite.serve(listener).await?;
    Ok(())
}

fn ws_config(read_buffer: Option<usize>) -> WebSocketConfig {
    let mut config = WebSocketConfig::default();
    if let Some(size) = read_buffer {
        config = config.read_buffer_size(size);
    }
    config
}

async fn serve_echo(
    listener: TcpListener,
    batched: bool,
    read_buffer: Option<usize>,
) -> Result<(), Box<dyn std::error::Error>> {
    loop {
        let (tcp, _) = listener.accept().await?;
        tokio::spawn(echo_connection(tcp, batched, read_buffer));
    }
}

async fn echo_connection(tcp: TcpStream, batched: bool, read_buffer: Option<usize>) {
    let _ = tcp.set_nodelay(true);
    let Ok(mut ws) =
        tokio_tungstenite::accept_async_with_config(tcp, Some(ws_config(read_buffer))).await
    else {
        return;
    };
    while let Some(Ok(msg)) = ws.next().await {
        if !(msg.is_text() || msg.is_binary()) {
            continue;
        }
        if !batched {
            if ws.send(msg).await.is_err() {
                return;
            }
            continue;
        }
        // Batched: queue this answer and every one whose request is already here, then flush.
        if ws.feed(msg).await.is_err() {
            return;
        }
        while let Some(Some(Ok(next))) = ws.next().now_or_never() {
            if (next.is_text() || next.is_binary()) && ws.feed(next).await.is_err() {
                return;
            }
        }
        if ws.flush().await.is_err() {
            return;
        }
    }
}

async fn serve_jsonrpsee(listener: TcpListener) -> Result<(), Box<dyn std::error::Error>> {
    use jsonrpsee::RpcModule;
    use jsonrpsee::types::ErrorObjectOwned;
    let config = jsonrpsee::server::ServerConfig::builder()
        .max_connections(50_000)
        .build();
    let server = jsonrpsee::server::Server::builder()
        .set_config(config)
        .build_from_tcp(listener.into_std()?)?;
    let mut module = RpcModule::new(());
    module.register_method("square", |params, _, _| {
        let n: f64 = params.one()?;
        Ok::<_, ErrorObjectOwned>(n * n)
    })?;
    module.register_method("echo", |params, _, _| {
        let s: String = params.one()?;
        Ok::<_, ErrorObjectOwned>(s)
    })?;
    let handle = server.start(module);
    handle.stopped().await;
    Ok(())
}
