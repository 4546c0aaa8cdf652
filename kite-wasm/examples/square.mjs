// A kite served from Node: `square` (open to any caller, as the introduction's `square`
// example), plus the built-ins (`kite.ping`, ...), on http://localhost:6000/kite. With a kite
// key (`$KITE_HOME/kite.key`, default `~/.kite/kite.key`, from `kitectl register`) it also
// registers with the Kontrol the key names, as `first`, so that the native `find` example finds
// it; the native `second` example calls it directly:
//
//   scripts/build-wasm                                   # builds kite-wasm/pkg
//   node kite-wasm/examples/square.mjs                   # PORT=0 picks a free port
//   cargo run -p kite-native --example second            # prints pong, then 16
//   cargo run -p kite-native --example find              # with a kite key: finds it, prints 16
//
// Installed from npm, the import is `from 'kite-wasm/server'`.
import { KiteServer } from '../pkg/server/index.js';

const server = new KiteServer({
  name: 'first',
  version: '1.0.0',
  logLevel: process.env.KITE_LOG_LEVEL ?? 'info',
  api: {
    square: { func: (x) => x * x, auth: false },
  },
});

const { url } = await server.listen({ port: Number(process.env.PORT ?? 6000), host: process.env.HOST ?? '127.0.0.1' });
console.log(`serving square at ${url}`);
if (server.kiteKey && server.kontrolURL) {
  try {
    await server.register({ url });
    console.log(`registered with Kontrol at ${server.kontrolURL}`);
  } catch (e) {
    console.error(`cannot register with Kontrol at ${server.kontrolURL}: ${e.message}`);
  }
} else {
  console.log('no kite key: not registering with Kontrol (get one with `kitectl register`)');
}
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => server.close().then(() => process.exit(0)));
}
