// Interoperability test: the reference JavaScript client `graphql-ws` (protocol
// `graphql-transport-ws`, over the `ws` package) against a running Parley server.
//
// Proves, with an unmodified third-party client:
//   1. live delivery of `conversationEvents` (10 messages, in seq order, right bodies);
//   2. resume by cursor after a disconnect (25 messages missed while away are
//      replayed exactly once, in order), followed by live delivery on the same
//      subscription (the replay -> live seam);
//   3. a bad token in `connection_init` closes the socket with code 4403.
//
// Usage: node tests/js/interop.mjs http://127.0.0.1:PORT
// Exits 0 and prints a short summary on success, non-zero on any failure.
// Normally run by scripts/js-interop.sh, which starts the server.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const WAIT_MS = 30_000; // per wait; generous, never asserted on
const PROBE_EVERY_MS = 500;
const OVERALL_MS = 5 * 60_000;

const base = (process.argv[2] ?? '').replace(/\/+$/, '');
if (!/^https?:\/\//.test(base)) {
  console.error('usage: node interop.mjs http://HOST:PORT');
  process.exit(2);
}
const httpUrl = `${base}/graphql`;
const wsUrl = httpUrl.replace(/^http/, 'ws');

// A hard stop, so a hang can never stall CI.
const overall = setTimeout(() => {
  console.error(`interop: FAILED: no result after ${OVERALL_MS / 1000} s`);
  process.exit(1);
}, OVERALL_MS);
overall.unref();

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------
// HTTP

async function gql(query, variables, token) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(httpUrl, {
    method: 'POST',
    headers,
    body: JSON.stringify({ query, variables }),
  });
  const text = await response.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`POST /graphql: HTTP ${response.status}, not JSON: ${text.slice(0, 500)}`);
  }
  if (!response.ok || body.errors?.length) {
    throw new Error(
      `POST /graphql: HTTP ${response.status}: ${JSON.stringify(body.errors ?? body)}`,
    );
  }
  return body.data;
}

const REGISTER = `mutation($i: RegisterInput!) {
  register(input: $i) { accessToken user { id username } }
}`;
const CREATE_GROUP = `mutation($i: CreateGroupInput!) { createGroup(input: $i) { id } }`;
const SEND = `mutation($i: SendMessageInput!) { sendMessage(input: $i) { id seq body } }`;

async function register(name) {
  const { register: payload } = await gql(REGISTER, {
    i: { username: name, password: 'interop-password-1234', displayName: `Interop ${name}` },
  });
  assert.equal(payload.user.username, name);
  return { id: payload.user.id, token: payload.accessToken, username: name };
}

async function send(user, conversationId, body) {
  const { sendMessage } = await gql(SEND, { i: { conversationId, body } }, user.token);
  assert.equal(sendMessage.body, body);
  return sendMessage;
}

// ---------------------------------------------------------------------------
// WebSocket

/** A graphql-ws client, plus a promise of its first `closed` event. */
function connect(token, options = {}) {
  let resolveClosed;
  const closed = new Promise((resolve) => {
    resolveClosed = resolve;
  });
  const client = createClient({
    url: wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: { authorization: `Bearer ${token}` },
    retryAttempts: 0,
    on: { closed: (event) => resolveClosed(event) },
    ...options,
  });
  return { client, closed };
}

const EVENTS = `subscription($c: ID!, $after: String) {
  conversationEvents(conversationId: $c, after: $after) {
    __typename
    ... on MessagePosted { cursor message { id seq body } }
  }
}`;

/**
 * Subscribes and queues what arrives, so the test can pull events one at a time
 * with a timeout. Errors and completion are queued too and fail the next pull.
 */
function subscribe(client, variables) {
  const queue = [];
  let wake = null;
  const push = (item) => {
    queue.push(item);
    if (wake) {
      const w = wake;
      wake = null;
      w();
    }
  };
  const unsubscribe = client.subscribe(
    { query: EVENTS, variables },
    {
      next: (value) => push({ kind: 'next', value }),
      error: (error) => push({ kind: 'error', error }),
      complete: () => push({ kind: 'complete' }),
    },
  );

  /** The next event (`{ __typename, ... }`), or null if none within `ms`. */
  async function poll(ms) {
    const deadline = Date.now() + ms;
    while (queue.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) return null;
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      wake = null;
    }
    const item = queue.shift();
    if (item.kind === 'error') throw new Error(`subscription error: ${describe(item.error)}`);
    if (item.kind === 'complete') throw new Error('subscription completed unexpectedly');
    const { data, errors } = item.value;
    if (errors?.length) throw new Error(`subscription errors: ${JSON.stringify(errors)}`);
    assert.ok(data?.conversationEvents, `event without data: ${JSON.stringify(item.value)}`);
    return data.conversationEvents;
  }

  /** The next MessagePosted, skipping other event types (read receipts and the like). */
  async function nextPosted(what, ms = WAIT_MS) {
    const deadline = Date.now() + ms;
    for (;;) {
      const event = await poll(Math.max(0, deadline - Date.now()));
      if (event === null) return null;
      if (event.__typename === 'MessagePosted') return event;
    }
  }

  async function expectPosted(what) {
    const event = await nextPosted(what);
    assert.ok(event, `timed out after ${WAIT_MS / 1000} s waiting for ${what}`);
    return event;
  }

  return { nextPosted, expectPosted, unsubscribe };
}

function describe(error) {
  if (error && typeof error === 'object' && 'code' in error) {
    return `close ${error.code} ${error.reason ?? ''}`.trim();
  }
  if (Array.isArray(error)) return JSON.stringify(error);
  return String(error?.stack ?? error);
}

// ---------------------------------------------------------------------------
// The scenario

async function main() {
  const suffix = randomBytes(4).toString('hex');
  const runTag = `interop-${suffix}`;

  // 1. Two users; A creates a group with B.
  const alice = await register(`interop_a_${suffix}`);
  const bob = await register(`interop_b_${suffix}`);
  const { createGroup } = await gql(
    CREATE_GROUP,
    { i: { title: `Interop ${suffix}`, memberIds: [bob.id] } },
    alice.token,
  );
  const conversationId = createGroup.id;
  assert.ok(conversationId, 'createGroup returned no id');

  const seenCursors = new Set();
  const seenIds = new Set();
  const record = (event, what) => {
    assert.equal(typeof event.cursor, 'string', `${what}: cursor is not a string`);
    assert.ok(!seenCursors.has(event.cursor), `${what}: cursor ${event.cursor} seen before`);
    assert.ok(!seenIds.has(event.message.id), `${what}: message ${event.message.id} delivered twice`);
    seenCursors.add(event.cursor);
    seenIds.add(event.message.id);
  };

  // 2. B subscribes live (no `after`); probes make sure the subscription is live.
  const first = connect(bob.token);
  const live = subscribe(first.client, { c: conversationId });

  let probesSent = 0;
  const probeDeadline = Date.now() + WAIT_MS;
  let probe = null;
  while (probe === null) {
    assert.ok(Date.now() < probeDeadline, `no probe arrived within ${WAIT_MS / 1000} s`);
    probesSent += 1;
    await send(alice, conversationId, `${runTag} probe ${probesSent}`);
    probe = await live.nextPosted('a probe', PROBE_EVERY_MS);
  }
  assert.match(probe.message.body, /probe \d+$/, `expected a probe, got ${JSON.stringify(probe)}`);
  record(probe, 'probe');

  const liveSent = [];
  for (let i = 1; i <= 10; i += 1) {
    liveSent.push(await send(alice, conversationId, `${runTag} live ${i}`));
  }
  for (let i = 1; i <= 9; i += 1) {
    assert.equal(liveSent[i].seq, liveSent[i - 1].seq + 1, 'sendMessage seqs not consecutive');
  }

  let lastSeq = probe.message.seq;
  let event = await live.expectPosted('live message 1');
  // Probes sent before the first one arrived may still be on their way.
  while (/ probe \d+$/.test(event.message.body)) {
    assert.equal(event.message.seq, lastSeq + 1, 'probe seq gap');
    record(event, 'late probe');
    lastSeq = event.message.seq;
    event = await live.expectPosted('live message 1');
  }
  let lastCursor = null;
  for (let i = 1; i <= 10; i += 1) {
    if (i > 1) event = await live.expectPosted(`live message ${i}`);
    const want = liveSent[i - 1];
    assert.equal(event.message.body, want.body, `live message ${i}: wrong body`);
    assert.equal(event.message.seq, want.seq, `live message ${i}: wrong seq`);
    assert.equal(event.message.id, want.id, `live message ${i}: wrong id`);
    assert.equal(event.message.seq, lastSeq + 1, `live message ${i}: seq gap`);
    record(event, `live message ${i}`);
    lastSeq = event.message.seq;
    lastCursor = event.cursor;
  }

  // 3. B disconnects; A posts 25 messages meanwhile.
  live.unsubscribe();
  await first.client.dispose();
  const firstClose = await withTimeout(first.closed, 'the first client to close');
  assert.ok(firstClose.code === 1000, `first client closed with ${describe(firstClose)}, want 1000`);

  const missedSent = [];
  for (let i = 1; i <= 25; i += 1) {
    missedSent.push(await send(alice, conversationId, `${runTag} missed ${i}`));
  }

  // 4. B reconnects with a new client and resumes from the last cursor.
  const second = connect(bob.token);
  const resumed = subscribe(second.client, { c: conversationId, after: lastCursor });
  for (let i = 1; i <= 25; i += 1) {
    const got = await resumed.expectPosted(`missed message ${i}`);
    const want = missedSent[i - 1];
    assert.equal(
      got.message.body,
      want.body,
      `replayed message ${i}: got ${JSON.stringify(got.message.body)}`,
    );
    assert.equal(got.message.id, want.id, `replayed message ${i}: wrong id`);
    assert.equal(got.message.seq, lastSeq + 1, `replayed message ${i}: seq gap`);
    record(got, `replayed message ${i}`);
    lastSeq = got.message.seq;
  }
  // Then live again on the same subscription.
  const after = await send(alice, conversationId, `${runTag} after resume`);
  const got = await resumed.expectPosted('the message posted after the replay');
  assert.equal(got.message.body, after.body, `after resume: got ${JSON.stringify(got.message.body)}`);
  assert.equal(got.message.id, after.id);
  assert.equal(got.message.seq, lastSeq + 1, 'after resume: seq gap');
  record(got, 'after resume');

  resumed.unsubscribe();
  await second.client.dispose();

  // 5. A bad token: the server closes the socket with 4403.
  const bad = connect('not-a-token');
  const badSub = subscribe(bad.client, { c: conversationId });
  const badClose = await withTimeout(bad.closed, 'the bad-token socket to close');
  assert.equal(badClose.code, 4403, `bad token: closed with ${describe(badClose)}, want 4403`);
  await assert.rejects(badSub.nextPosted('the bad-token error', WAIT_MS), (error) => {
    assert.match(String(error.message), /close 4403/);
    return true;
  });
  await bad.client.dispose();

  const { version } = JSON.parse(
    readFileSync(new URL('./node_modules/graphql-ws/package.json', import.meta.url), 'utf8'),
  );
  console.log(`graphql-ws interop: OK (graphql-ws ${version}, Node ${process.version}, ${base})`);
  console.log(`  live:      10/10 messages in seq order (after ${probesSent} probe(s))`);
  console.log('  resume:    25/25 missed messages replayed from the cursor, none repeated');
  console.log('  seam:      1 message posted after the replay delivered live');
  console.log(`  bad token: socket closed with ${badClose.code}`);
}

async function withTimeout(promise, what, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms / 1000} s waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(`graphql-ws interop: FAILED: ${error?.stack ?? error}`);
    process.exit(1);
  },
);
