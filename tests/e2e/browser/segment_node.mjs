// Sends Segment calls with Segment's own Node library (@segment/analytics-node,
// unmodified), configured only with a write key and Powehi's host, for
// tests/e2e/test_segment_compat.py.
//
//   node segment_node.mjs '<plan JSON>'
//
// plan: {host, writeKey, maxRetries?, flushInterval?, stages: [[{method, params}, ...], ...]}
// Each stage's calls are enqueued; between stages the script prints {"stage": i} and waits
// for a line on stdin (the test stops or starts the gateway meanwhile). At the end it
// flushes and closes. Prints one JSON line per call the library settled
// ({"messageId", "type", "event"} or {"messageId", "error"}) and {"done": true} last.
//
// Environment: POWEHI_BROWSER_MODULES, the directory deploy/local/browser-env.sh installed
// the node modules into (ESM ignores NODE_PATH, so the library is required from there).
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const { Analytics } = createRequire(join(process.env.POWEHI_BROWSER_MODULES, 'package.json'))(
  '@segment/analytics-node',
);

const plan = JSON.parse(process.argv[2]);
const analytics = new Analytics({
  writeKey: plan.writeKey,
  host: plan.host,
  maxRetries: plan.maxRetries ?? 3,
  flushInterval: plan.flushInterval ?? 200,
});
const print = (line) => process.stdout.write(JSON.stringify(line) + '\n');
analytics.on('error', (err) => print({ libraryError: String(err && (err.reason || err.message || err)) }));

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
for (const [index, stage] of plan.stages.entries()) {
  if (index > 0) {
    print({ stage: index });
    await lines.next();
  }
  for (const { method, params } of stage) {
    analytics[method](params, (err, ctx) => {
      const event = ctx && ctx.event;
      if (err) print({ messageId: event && event.messageId, error: String(err.reason || err) });
      else print({ messageId: event.messageId, type: event.type, event: event.event });
    });
  }
}
await analytics.closeAndFlush({ timeout: 120000 });
print({ done: true });
process.exit(0);
