// A real Kite.js KiteServer (raw websocket transport) for our client to call.
//
//   node kitejs-server.js PORT
//
// Prints "ready" once listening. Methods: square(x), callback({value, times, cb}), fail(),
// both(f, {again: g}) (calls f('first') and g('second'); f and g may be one function).
'use strict';

const { KiteServer } = require('kite.js');

const port = Number(process.argv[2]);
const math = new KiteServer({
  name: 'math-js',
  auth: false,
  logLevel: 0,
  api: {
    square: (x, done) => done(null, x * x),
    callback: ({ value, times, cb }, done) => {
      for (let i = 0; i < times; i++) cb(value);
      done(null, value);
    },
    fail: (done) => done({ type: 'genericError', message: 'js says no', code: 'JS1' }),
    both: (f, holder, done) => {
      f('first');
      holder.again('second');
      done(null, 'called both');
    },
  },
});
math.listen(port);
// KiteServer wraps its transport; the ws.Server inside emits 'listening'.
math.server.server.on('listening', () => console.log('ready'));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
