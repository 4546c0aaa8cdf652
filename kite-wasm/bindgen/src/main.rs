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
//! Unlike `wasm-bindgen`, it leaves the doc comments out of the JS glue: they are in the
//! TypeScript declarations (`kite.d.ts`, which the glue's `@ts-self-types` pragma and the
//! package's `types` point editors to), and in the glue they were a fifth of what a page
//! downloads of it (docs/BENCHMARKS.md, "kite-wasm size").
//!
//! ```text
//! kite-wasm-bindgen target/wasm/wasm32-unknown-unknown/wasm-release/kite_wasm.wasm \
//!     --out-dir kite-wasm/pkg/web --out-name kite
//! ```

use std::path::{Path, PathBuf};
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
/// the JavaScript functions handed to Rust are used wherever the engine has them. Then the
/// doc comments leave the JS glue (they stay in the `.d.ts`).
fn bind(args: &Args) -> anyhow::Result<()> {
    Bindgen::new()
        .input_path(&args.input)
        .web(true)?
        .demangle(true)
        .typescript(true)
        .omit_default_module_path(false)
        .out_name(&args.out_name)
        .generate(&args.out_dir)?;
    let js = args.out_dir.join(format!("{}.js", args.out_name));
    strip_js_docs(&js)
}

/// Removes the doc comments from the JS glue at `path`.
fn strip_js_docs(path: &Path) -> anyhow::Result<()> {
    let js = std::fs::read_to_string(path)?;
    std::fs::write(path, without_doc_comments(&js))?;
    Ok(())
}

/// `js` without its doc comments: the `/** ... */` blocks that wasm-bindgen writes on lines of
/// their own, before a class, function or method. Other comments (the `@ts-self-types` pragma
/// is a `/* */` one) and everything else stay as they are.
fn without_doc_comments(js: &str) -> String {
    let mut out = String::with_capacity(js.len());
    let mut in_doc = false;
    for line in js.split_inclusive('\n') {
        let trimmed = line.trim();
        if !in_doc && trimmed.starts_with("/**") {
            in_doc = true;
        }
        if in_doc {
            // The block ends on the line that closes it (the opening line, for a one-liner).
            if trimmed.ends_with("*/") {
                in_doc = false;
            }
            continue;
        }
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::without_doc_comments;

    #[test]
    fn doc_comments_leave_the_glue() {
        let js = "/* @ts-self-types=\"./kite.d.ts\" */\n\
            /**\n * A kite.\n *\n * ```js\n * new Kite('http://h/kite'); // */ inside\n * ```\n */\n\
            export class Kite {\n    /** One line. */\n    connect() {\n        wasm.kite_connect(this.__wbg_ptr); /* kept */\n    }\n}\n";
        assert_eq!(
            without_doc_comments(js),
            "/* @ts-self-types=\"./kite.d.ts\" */\n\
             export class Kite {\n    connect() {\n        wasm.kite_connect(this.__wbg_ptr); /* kept */\n    }\n}\n"
        );
    }
}
