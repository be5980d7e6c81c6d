// Verifies webhook deliveries with the official Mux Node SDK (`@mux/mux-node`), as an
// application written for Mux would: `new Mux({webhookSecret}).webhooks.unwrap(body, headers)`.
//
// usage: MUX_WEBHOOK_SECRET=... node verify_webhook.mjs [deliveries.json]   (else stdin)
// The input is a JSON list of {"body": "<the raw body, as sent>", "headers": {name: value}}.
// Prints "<index> <event id> <event type>" for each delivery the SDK accepts and
// "<index> rejected: <the SDK's reason>" on stderr for each it refuses; exits 1 if any was
// refused, 2 on unusable input. The SDK is looked up in RELAY_MUX_NODE_PREFIX (default: the
// repository's .make/mux-node, where `make test` unpacks it).
import { webcrypto } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// The SDK signs with globalThis.crypto.subtle, a global only from Node 19 on; Node 18
// (Debian bookworm's nodejs) has the same Web Crypto as node:crypto's webcrypto.
globalThis.crypto ??= webcrypto;

const here = dirname(fileURLToPath(import.meta.url));
const prefix = resolve(process.env.RELAY_MUX_NODE_PREFIX ?? join(here, '..', '..', '.make', 'mux-node'));
const { Mux } = createRequire(join(prefix, 'package.json'))('@mux/mux-node');

const secret = process.env.MUX_WEBHOOK_SECRET;
if (!secret) {
  console.error('MUX_WEBHOOK_SECRET is not set: give the secret Relay signs with (--webhook-secret)');
  process.exit(2);
}
let deliveries;
try {
  deliveries = JSON.parse(readFileSync(process.argv[2] ?? 0, 'utf8'));
} catch (error) {
  console.error(`cannot read the deliveries: ${error.message}`);
  process.exit(2);
}
if (!Array.isArray(deliveries) || deliveries.length === 0) {
  console.error('expected a non-empty JSON list of {"body", "headers"}');
  process.exit(2);
}

const mux = new Mux({ webhookSecret: secret });
let rejected = 0;
for (const [index, { body, headers }] of deliveries.entries()) {
  try {
    const event = await mux.webhooks.unwrap(body, headers);
    console.log(`${index} ${event.id} ${event.type}`);
  } catch (error) {
    rejected += 1;
    console.error(`${index} rejected: ${error.message}`);
  }
}
process.exit(rejected ? 1 : 0);
