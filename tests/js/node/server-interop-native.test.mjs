// Our native Rust client (kite-native, driven through the fixtures' control server: `POST
// /call`, see tests/fixtures/src/control.rs) calling the Node KiteServer over SockJS websocket,
// xhr-streaming, xhr-polling and the raw websocket: results, callbacks both ways, errors,
// and a kite key of the fixtures' Kontrol as credentials.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { control, TEST_TIMEOUT, SUITE_TIMEOUT } from './fixtures.mjs';
import { KiteServer, interopApi } from './server-kit.mjs';

/** The native transports: name -> (server URL) -> the URL to dial. */
const NATIVE = {
  websocket: (url) => url,
  'xhr-streaming': (url) => url,
  'xhr-polling': (url) => url,
  'raw-websocket': (url) => `${url.replace(/^http/, 'ws')}/websocket`,
};
/** What the native session reports it ran over (its `TransportKind`). */
const KIND = { websocket: 'WebSocket', 'xhr-streaming': 'XhrStreaming', 'xhr-polling': 'XhrPolling', 'raw-websocket': 'RawWebSocket' };

/** What the native client got calling `method` with `args` over `transport`. */
async function nativeCall(url, transport, method, args = [], extra = '') {
  const q = new URLSearchParams({ url: NATIVE[transport](url), transport, method });
  return JSON.parse(await control('POST', `/call?${q}${extra}`, args));
}

describe('native Rust client -> Node KiteServer', { timeout: SUITE_TIMEOUT }, () => {
  let server;

  before(async () => {
    const serverKey = await control('GET', '/kite-key?username=node-owner');
    server = new KiteServer({ name: 'interop', kiteKey: serverKey, logLevel: 'none', api: interopApi() });
    await server.listen({ port: 0, host: '127.0.0.1' });
  });

  after(() => server?.close());

  for (const transport of Object.keys(NATIVE)) {
    describe(transport, () => {
      test('square', { timeout: TEST_TIMEOUT }, async () => {
        const out = await nativeCall(server.url, transport, 'square', [4]);
        assert.deepEqual({ result: out.result, error: out.error }, { result: 16, error: undefined });
        assert.equal(out.transport, KIND[transport], 'the session ran over the transport asked for');
      });

      test('callbacks: the server calls the native function before it answers', { timeout: TEST_TIMEOUT }, async () => {
        const out = await nativeCall(server.url, transport, 'callback', [{ value: 7, times: 2, cb: '[Function]' }]);
        assert.equal(out.result, 7, JSON.stringify(out));
        assert.deepEqual(out.calls, [
          { function: 0, args: [7] },
          { function: 0, args: [7] },
        ]);
      });

      test('the server calls the native function with a reply function, the native side answers', { timeout: TEST_TIMEOUT }, async () => {
        const out = await nativeCall(server.url, transport, 'ask', ['[Function]'], '&answer=from-rust');
        assert.equal(out.result, 'client said: from-rust', JSON.stringify(out));
        assert.deepEqual(out.calls, [{ function: 0, args: ['node', '[Function]'] }]);
      });

      test("the server calls the native kite's own method client.hello through ctx.peer", { timeout: TEST_TIMEOUT }, async () => {
        const out = await nativeCall(server.url, transport, 'askPeer');
        assert.equal(out.result, 'client said: hello node', JSON.stringify(out));
      });

      test('errors and authentication', { timeout: TEST_TIMEOUT }, async () => {
        const failed = await nativeCall(server.url, transport, 'fail');
        assert.deepEqual(
          { type: failed.error?.type, message: failed.error?.message, code: failed.error?.code },
          { type: 'genericError', message: 'node says no', code: 'N1' },
        );
        const refused = await nativeCall(server.url, transport, 'whoami');
        assert.equal(refused.error?.type, 'authenticationError', JSON.stringify(refused));
        const keyed = await nativeCall(server.url, transport, 'whoami', [], '&kite_key=native-user');
        assert.equal(keyed.result, 'native-user', JSON.stringify(keyed));
      });
    });
  }
});
