// Waiting in tests, with deadlines: the next event, a promise within a time, a remote state
// polled until true, a rejection. Shared by fixtures.mjs (tests with the fixture kites) and
// server-kit.mjs (tests of the Node server alone), so it depends on neither.

/** Resolves with the arguments of the next `event` of `emitter` (a Kite or a Node
 *  EventEmitter), or rejects after `ms`. */
export function nextEvent(emitter, event, ms = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, listener);
      reject(new Error(`no '${event}' event within ${ms} ms`));
    }, ms);
    function listener(...args) {
      clearTimeout(timer);
      emitter.off(event, listener);
      resolve(args);
    }
    emitter.on(event, listener);
  });
}

/** Rejects after `ms` with `what` in the message unless `promise` settles first. */
export function within(promise, ms, what) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** Polls `check` until it returns a truthy value (returned), failing after `ms`: for state on
 *  the other side of a socket that sends no event when it changes. */
export async function until(check, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not true within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Resolves with the rejection of `promise`, failing if it resolves. */
export async function rejection(promise, what = 'the call') {
  let value;
  try {
    value = await promise;
  } catch (e) {
    return e;
  }
  throw new Error(`${what} resolved (${JSON.stringify(value)}) instead of rejecting`);
}
