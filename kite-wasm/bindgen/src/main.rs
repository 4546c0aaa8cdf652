//! `kite-wasm-bindgen`: binds the kite-wasm module to JavaScript (an ES module for browsers,
//! `--target web`), as `wasm-bindgen --target web` does, with wasm-bindgen's own library
//! (`wasm-bindgen-cli-support`) at the version Cargo.lock pins.
//!
//! scripts/build-wasm runs it. It exists so the package builds without `cargo install
//! wasm-bindgen-cli`, which also compiles the CLI's test runner and its HTTP server and client:
//! a first build of this tool shares the workspace's dependencies and costs a fraction of that.
//! The test runner itself (`wasm-bindgen-test-runner`) is still installed by `scripts/setup` for
//! the browser tests.
//!
//! ```text
//! kite-wasm-bindgen target/wasm/wasm32-unknown-unknown/wasm-release/kite_wasm.wasm \
//!     --out-dir kite-wasm/pkg/web --out-name kite
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use wasm_bindgen_cli_support::Bindgen;

/// The command line.
#[derive(Debug, Parser)]
#[command(about = "Binds the kite-wasm module to JavaScript (wasm-bindgen --target web)")]
struct Args {
    /// The module cargo built (`kite_wasm.wasm`).
    input: PathBuf,
    /// Where the JS glue, its TypeScript declarations and the bound module go.
    #[arg(long)]
    out_dir: PathBuf,
    /// The base name of the output files (`kite.js`, `kite_bg.wasm`, ...).
    #[arg(long, default_value = "kite")]
    out_name: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match bind(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "kite-wasm-bindgen: cannot bind {}: {e:#}",
                args.input.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// What `wasm-bindgen --target web --out-dir D --out-name N INPUT` does; weak references for
/// the JavaScript functions handed to Rust are used wherever the engine has them.
fn bind(args: &Args) -> anyhow::Result<()> {
    Bindgen::new()
        .input_path(&args.input)
        .web(true)?
        .demangle(true)
        .typescript(true)
        .omit_default_module_path(false)
        .out_name(&args.out_name)
        .generate(&args.out_dir)
}
