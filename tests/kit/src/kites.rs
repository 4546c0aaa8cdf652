//! The introduction's test kites: `square` and `echo` on 127.0.0.1 (feature `kites`).

use std::net::SocketAddr;

use kite_native::{Config, Kite, KiteError, Request};

use crate::within;

/// A kite configuration listening on 127.0.0.1 at any free port.
pub fn local_config() -> Config {
    let mut c = Config::default();
    c.ip = [127, 0, 0, 1].into();
    c.port = 0;
    c
}

/// Adds the introduction's `square` method: a number times itself.
pub fn add_square(kite: &Kite) {
    kite.handle("square", |req: Request| async move {
        let n: f64 = req.arg()?;
        Ok::<_, KiteError>(n * n)
    });
}

/// Adds `echo`: the string it is given, back.
pub fn add_echo(kite: &Kite) {
    kite.handle("echo", |req: Request| async move {
        let s: String = req.arg()?;
        Ok::<_, KiteError>(s)
    });
}

/// Adds both [`add_square`] and [`add_echo`].
pub fn add_square_and_echo(kite: &Kite) {
    add_square(kite);
    add_echo(kite);
}

/// Runs `kite` in a task of the test's runtime and returns its address once it listens.
pub async fn serve(kite: &Kite) -> SocketAddr {
    let server = kite.clone();
    tokio::spawn(async move { server.run().await.unwrap() });
    within("kite up", kite.ready()).await
}
