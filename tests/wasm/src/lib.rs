//! Browser tests of `kite-wasm` live in `tests/`; they run only for `wasm32-unknown-unknown`
//! (see `scripts/test-wasm`). This library is empty.
