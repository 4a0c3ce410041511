// End-to-end test of the demo page in real headless Chromium (Debian's /usr/bin/chromium), driven by
// playwright-core, against a signaling server this script starts on a free loopback port.
//
//   node e2e.mjs -- <server command...>
//
// The server command gets `--ice-server stun:127.0.0.1:3478 --ring-timeout 5 --addr 127.0.0.1:PORT`
// appended, must serve the page at `/`, that ICE server at `/config.json` and the WebSocket at
// `/ws`, and speak issue 10's sessions and ringing (docs/protocol.md). scripts/e2e.sh passes the
// built basic_server binary. The last tests start a second one with `--tls-self-signed --tls-name
// signaling.test` too, and hold a call over https:// and wss:// on that name (see `TlsServer`).
// TURN (issue 12): the script starts its own coturn (`turnserver`, use-auth-secret, a random
// secret) on a free loopback port and appends `--turn-url turn:127.0.0.1:P --turn-secret S`; the
// relay test's calls must go through it with the credentials of the pages' login replies. Without
// `turnserver` that test prints one SKIPPED line and counts as skipped (under CI=true: it fails).
// Environment: CHROMIUM (browser path, default /usr/bin/chromium), E2E_ARTIFACTS (screenshot
// directory, default ./artifacts), TURNSERVER (coturn's binary, default turnserver on PATH).
// The tests run in order and build on each other; after the first failure the rest are skipped.
// Prints one line per test and a closing `N passed, N failed[, N skipped]`; exits 1 on any failure.

import { spawn } from 'node:child_process';
import { createHash, randomBytes, X509Certificate } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = path.resolve(process.env.E2E_ARTIFACTS || path.join(here, 'artifacts'));
const STEP_TIMEOUT = 15_000;   // one wait inside a test
const TEST_TIMEOUT = 60_000;   // one whole test
const RUN_TIMEOUT = 240_000;   // everything, browsers included
// Handed to the page through /config.json. Loopback, where nothing answers: host candidates still connect.
const ICE_SERVER = 'stun:127.0.0.1:3478';
// --ring-timeout: an unanswered call ends this many seconds after the offer. Short, so that the
// no-answer test is quick; long enough for a call placed while the callee's signaling is down to
// still ring after its resume (up to 2 s of reconnect back-off).
const RING_TIMEOUT_S = 5;
const LAUNCH_FLAGS = [
  '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
];

const TURNSERVER = process.env.TURNSERVER || 'turnserver';
const TURN_SECRET = randomBytes(24).toString('hex');

const dashdash = process.argv.indexOf('--');
const serverCommand = dashdash >= 0 ? process.argv.slice(dashdash + 1) : [];
if (!serverCommand.length) {
  console.error('usage: node e2e.mjs -- <server command...>   (gets --ice-server URL --addr 127.0.0.1:PORT appended)');
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// Plumbing: the server process, browsers, waits

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms); }),
  ]);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** A child process whose last output lines are kept for the failure report. */
class Child {
  constructor(port, keepLines) {
    this.port = port;
    this.keepLines = keepLines;
    this.output = [];
    this.proc = null;
  }

  watch(proc) {
    this.proc = proc;
    this.exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
    const keep = (chunk) => {
      this.output.push(...chunk.toString().split('\n').filter(Boolean));
      if (this.output.length > this.keepLines) this.output.splice(0, this.output.length - this.keepLines);
    };
    proc.stdout.on('data', keep);
    proc.stderr.on('data', keep);
  }

  /** Polls `up()` every `pollMs` until it says yes; throws if the process exits first, or after `ms`. */
  async waitUp(what, ms, pollMs, up) {
    const deadline = Date.now() + ms;
    for (;;) {
      const exited = await Promise.race([this.exited, sleep(0).then(() => null)]);
      if (exited) throw new Error(`${what} exited early (${JSON.stringify(exited)}):\n${this.output.slice(-20).join('\n')}`);
      if (await up().catch(() => false)) return;
      if (Date.now() > deadline) throw new Error(`${what} did not answer on port ${this.port} within ${ms / 1000} s`);
      await sleep(pollMs);
    }
  }
}

class Server extends Child {
  constructor(command, port) {
    super(port, 400);
    this.command = command;
  }

  async start() {
    const [cmd, ...args] = this.command;
    this.watch(spawn(cmd, [...args, '--addr', `127.0.0.1:${this.port}`], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { RUST_LOG: 'info', ...process.env },
    }));
    await this.waitUp('server', 20_000, 150, () => this.answers());
  }

  /** Whether the server serves its page yet. */
  async answers() {
    const response = await fetch(`http://127.0.0.1:${this.port}/`, { signal: AbortSignal.timeout(1000) });
    return response.ok;
  }

  async stop() {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill('SIGTERM');
    const done = await Promise.race([this.exited, sleep(5000).then(() => null)]);
    if (!done) {
      this.proc.kill('SIGKILL');
      await this.exited;
    }
  }
}

/** A test that cannot run here (counted as skipped, not failed). */
class Skip extends Error {}

/**
 * coturn on 127.0.0.1 with the TURN REST scheme (`use-auth-secret`, the secret the signaling
 * server mints credentials with), relaying on loopback, killed at the end. `start()` returns
 * false when the binary is missing (and throws under CI=true).
 */
class Coturn extends Child {
  constructor(port) {
    super(port, 200);
    this.url = `turn:127.0.0.1:${port}`;
  }

  async start() {
    const proc = spawn(TURNSERVER, [
      '-n', '--listening-ip', '127.0.0.1', '--relay-ip', '127.0.0.1', '--listening-port', String(this.port),
      '--use-auth-secret', '--static-auth-secret', TURN_SECRET, '--realm', 'signaling.test',
      '--no-tls', '--no-dtls', '--no-cli', '--allow-loopback-peers',
      '--log-file', 'stdout', '--simple-log', '--pidfile', path.join(os.tmpdir(), `e2e-turnserver-${this.port}.pid`),
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    const spawned = await new Promise((resolve) => {
      proc.once('spawn', () => resolve(true));
      proc.once('error', (error) => resolve(error));
    });
    if (spawned !== true) {
      if (spawned.code !== 'ENOENT') throw spawned;
      if (process.env.CI === 'true') throw new Error(`${TURNSERVER} not found, and CI=true: the TURN test must run (apt-get install coturn)`);
      console.log(`SKIPPED: the TURN relay test: ${TURNSERVER} not found (install coturn: apt-get install coturn)`);
      return false;
    }
    this.watch(proc);
    // It listens on TCP and UDP at once: a TCP connection says it is up.
    await this.waitUp('turnserver', 10_000, 50, () => new Promise((resolve) => {
      const socket = net.connect(this.port, '127.0.0.1', () => { socket.destroy(); resolve(true); });
      socket.once('error', () => resolve(false));
    }));
    return true;
  }

  async stop() {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill('SIGKILL');
    await this.exited;
  }
}

/**
 * A TCP proxy in front of the server, so that a test can cut one page's connections abruptly
 * (an RST each way, no WebSocket close frame: a network drop, not a goodbye) and keep its
 * signaling from reconnecting for a while (`blocked`: WebSocket upgrades get an RST; the page
 * itself still loads). A page loaded from `proxy.base` derives its WebSocket URL from it.
 */
class TcpProxy {
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.pairs = new Set();
    this.blocked = false;
    this.upgrades = 0;  // WebSocket connections let through, all time
  }

  async start() {
    this.server = net.createServer((client) => {
      client.on('error', () => client.destroy());
      client.once('data', (first) => {
        const websocket = first.toString('latin1').startsWith('GET /ws');
        if (websocket && this.blocked) {
          client.resetAndDestroy();
          return;
        }
        if (websocket) this.upgrades += 1;
        const upstream = net.connect(this.targetPort, '127.0.0.1');
        const pair = { client, upstream };
        this.pairs.add(pair);
        const fail = () => {
          client.destroy();
          upstream.destroy();
        };
        client.on('error', fail);
        upstream.on('error', fail);
        client.on('close', () => this.pairs.delete(pair));
        upstream.on('close', () => this.pairs.delete(pair));
        upstream.write(first);
        client.pipe(upstream);
        upstream.pipe(client);
      });
    });
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', resolve);
    });
    this.base = `http://127.0.0.1:${this.server.address().port}/`;
  }

  /** Resets every connection through the proxy, both sides. */
  cut() {
    const n = this.pairs.size;
    for (const { client, upstream } of this.pairs) {
      client.resetAndDestroy();
      upstream.resetAndDestroy();
    }
    this.pairs.clear();
    return n;
  }

  async stop() {
    this.blocked = true;
    this.cut();
    await new Promise((resolve) => (this.server ? this.server.close(resolve) : resolve()));
  }
}

const peers = [];

/** One person: a separate Chromium with a fresh profile, one page. */
async function newPeer(label, { denyCamera = false, args = [] } = {}) {
  const profile = await mkdtemp(path.join(os.tmpdir(), `e2e-${label}-`));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...LAUNCH_FLAGS, ...args],
    viewport: { width: 1200, height: 900 },
    timeout: 30_000,
  });
  context.setDefaultTimeout(STEP_TIMEOUT);
  const page = context.pages()[0] ?? await context.newPage();
  const peer = { label, context, page, profile, errors: [], console: [] };
  page.on('pageerror', (error) => peer.errors.push(String(error)));
  page.on('console', (message) => {
    peer.console.push(`${message.type()}: ${message.text()}`);
    if (peer.console.length > 200) peer.console.shift();
  });
  if (denyCamera) {
    await page.addInitScript(() => {
      navigator.mediaDevices.getUserMedia = () =>
        Promise.reject(new DOMException('Permission denied by the test', 'NotAllowedError'));
    });
  }
  peers.push(peer);
  return peer;
}

async function closePeers() {
  await Promise.allSettled(peers.map(async (peer) => {
    await withTimeout(peer.context.close(), 10_000, `closing ${peer.label}`).catch(() => {});
    await rm(peer.profile, { recursive: true, force: true });
  }));
}

const body = (peer, attr) => peer.page.evaluate((a) => document.body.dataset[a] ?? null, attr);

async function waitBody(peer, expected, timeout = STEP_TIMEOUT) {
  try {
    await peer.page.waitForFunction((want) =>
      Object.entries(want).every(([k, v]) => (document.body.dataset[k] ?? null) === v), expected, { timeout });
  } catch (error) {
    const actual = await peer.page.evaluate(() => ({ ...document.body.dataset })).catch(() => ({}));
    throw new Error(`${peer.label}: expected body ${JSON.stringify(expected)}, have ${JSON.stringify(actual)}`);
  }
}

async function waitNotice(peer, code, textPart) {
  const notice = peer.page.locator(`#notices .notice[data-code="${code}"]`);
  try {
    await notice.first().waitFor({ state: 'visible' });
  } catch {
    const all = await peer.page.locator('#notices .notice').evaluateAll((els) => els.map((e) => `${e.dataset.code}: ${e.textContent}`));
    throw new Error(`${peer.label}: no notice ${code}; notices: ${JSON.stringify(all)}`);
  }
  const text = await notice.first().textContent();
  if (textPart && !text.includes(textPart)) throw new Error(`${peer.label}: notice ${code} reads ${JSON.stringify(text)}, expected it to mention ${JSON.stringify(textPart)}`);
  return text;
}

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

let base;

async function login(peer, name) {
  if (!peer.page.url().startsWith('http')) await peer.page.goto(base);  // (a page may be on the proxy)
  await peer.page.fill('#username', name);
  await peer.page.click('#login-btn');
  await waitBody(peer, { state: 'idle', user: name, signaling: 'open' });
}

/** The caller dials; the call rings on the callee's page until someone clicks there. */
async function dial(caller, callee, calleeName) {
  const callerName = await body(caller, 'user');
  await caller.page.fill('#callee', calleeName);
  await caller.page.click('#call-btn');
  await waitBody(caller, { state: 'calling', peer: calleeName });
  await waitRinging(callee, callerName);
}

async function waitRinging(callee, callerName) {
  await waitBody(callee, { state: 'ringing', peer: callerName });
  const text = await callee.page.locator('#incoming').textContent();
  assert(text.includes(`${callerName} is calling you`), `${callee.label}: the incoming call reads ${JSON.stringify(text)}`);
}

/** A call the callee accepts. */
async function call(caller, callee, calleeName) {
  await dial(caller, callee, calleeName);
  await callee.page.click('#accept-btn');
  await waitBody(caller, { state: 'in-call', peer: calleeName });
  await waitBody(callee, { state: 'in-call', peer: await body(caller, 'user') });
}

async function waitConnected(peer) {
  try {
    await peer.page.waitForFunction(() => window.pc?.connectionState === 'connected', null, { timeout: 20_000 });
  } catch {
    const state = await peer.page.evaluate(() => window.pc && `${window.pc.connectionState}/${window.pc.iceConnectionState}`);
    throw new Error(`${peer.label}: RTCPeerConnection not connected (${state})`);
  }
}

/** The remote <video> has frames and is playing: videoWidth > 0 and currentTime advances. */
async function waitRemoteVideoPlays(peer) {
  try {
    await peer.page.waitForFunction(() => {
      const v = document.querySelector('#remote-video');
      return v.videoWidth > 0 && v.currentTime > 0;
    });
  } catch {
    const v = await peer.page.evaluate(() => { const e = document.querySelector('#remote-video'); return { w: e.videoWidth, t: e.currentTime, paused: e.paused, rs: e.readyState }; });
    throw new Error(`${peer.label}: remote video not playing: ${JSON.stringify(v)}`);
  }
  const t0 = await peer.page.evaluate(() => document.querySelector('#remote-video').currentTime);
  await peer.page.waitForFunction((t) => document.querySelector('#remote-video').currentTime > t + 0.5, t0)
    .catch(() => { throw new Error(`${peer.label}: remote video currentTime stuck at ${t0}`); });
  const width = await peer.page.evaluate(() => document.querySelector('#remote-video').videoWidth);
  return width;
}

/** Frames keep arriving: the remote video decodes more frames and its currentTime advances. */
async function waitRemoteVideoAdvances(peer, what) {
  const sample = () => peer.page.evaluate(() => {
    const v = document.querySelector('#remote-video');
    return { t: v.currentTime, frames: v.getVideoPlaybackQuality().totalVideoFrames };
  });
  const before = await sample();
  try {
    await peer.page.waitForFunction(({ t, frames }) => {
      const v = document.querySelector('#remote-video');
      return v.currentTime > t + 0.5 && v.getVideoPlaybackQuality().totalVideoFrames > frames + 5;
    }, before, { timeout: 5000 });
  } catch {
    throw new Error(`${peer.label}: remote video stalled ${what}: ${JSON.stringify(before)} -> ${JSON.stringify(await sample())}`);
  }
}

const stored = (peer) => peer.page.evaluate(() => JSON.parse(sessionStorage.getItem('signaling-session')));

async function chat(from, to, text) {
  await from.page.fill('#chat-input', text);
  await from.page.click('#chat-send');
  await to.page.locator('#chat-log li.peer .text', { hasText: text }).waitFor()
    .catch(() => { throw new Error(`${to.label} never got chat message ${JSON.stringify(text)}`); });
}

async function hangUpAndCheck(hanger, other) {
  const hangerName = await body(hanger, 'user');
  await hanger.page.click('#hangup-btn');
  await waitBody(hanger, { state: 'idle', connection: 'none' });
  await waitBody(other, { state: 'idle', connection: 'none' });
  await waitNotice(other, 'peer_hung_up', hangerName);
  assert(await other.page.evaluate(() => window.pc === null), `${other.label}: peer connection still set after hang-up`);
}

async function screenshot(peer, name) {
  const file = path.join(ARTIFACTS, `${name}-${peer.label}.png`);
  await peer.page.screenshot({ path: file, fullPage: true, timeout: 10_000 }).catch((e) => console.log(`  (screenshot ${file} failed: ${e.message})`));
  return file;
}

async function pageLog(peer) {
  return peer.page.evaluate(() => [...document.querySelectorAll('#log li')].slice(-25).map((li) => li.textContent)).catch(() => []);
}

// ---------------------------------------------------------------------------------------------
// The tests, in order: later ones build on the users logged in by earlier ones.

const tests = [];
const test = (name, fn) => tests.push({ name, fn });
let alice, bob, carol, dave;
let server;
let proxy;
let coturn = null;  // null: no turnserver here

test('1. two pages log in as different users; alice calls bob, it rings until bob accepts', async () => {
  [alice, bob] = await Promise.all([newPeer('alice'), newPeer('bob')]);
  await Promise.all([login(alice, 'alice'), login(bob, 'bob')]);
  await waitBody(alice, { media: 'camera' });  // Chromium's fake camera
  await waitBody(bob, { media: 'camera' });
  await dial(alice, bob, 'bob');
  // Ringing: bob's page holds the offer and has not answered it.
  await sleep(500);
  assert(await bob.page.evaluate(() => window.pc?.signalingState) === 'have-remote-offer', 'bob answered before Accept');
  await waitBody(alice, { state: 'calling' });
  await screenshot(bob, '01-ringing');
  await bob.page.click('#accept-btn');
  await waitBody(alice, { state: 'in-call', peer: 'bob' });
  await waitBody(bob, { state: 'in-call', peer: 'alice' });
});

test('2. both peer connections connect (with the ICE servers of /config.json and the login reply); each remote video has frames and advances', async () => {
  await Promise.all([waitConnected(alice), waitConnected(bob)]);
  const ice = await alice.page.evaluate(() => window.pc.getConfiguration().iceServers);
  assert(JSON.stringify(ice).includes(ICE_SERVER), `the page did not use the ICE servers of the server: ${JSON.stringify(ice)}`);
  if (coturn) {
    // The login reply's TURN server, with credentials for alice, replaced /config.json's list.
    const turn = ice.find((server) => [].concat(server.urls).includes(coturn.url));
    assert(turn && /^\d+:alice$/.test(turn.username) && turn.credential, `no TURN credentials for alice: ${JSON.stringify(ice)}`);
  }
  const [wBob, wAlice] = await Promise.all([waitRemoteVideoPlays(bob), waitRemoteVideoPlays(alice)]);
  assert(wBob > 0 && wAlice > 0, 'videoWidth is 0');
  await Promise.all([screenshot(alice, '02-in-call'), screenshot(bob, '02-in-call')]);
});

test('3. chat both ways over the data channel; a file arrives intact with a full progress bar', async () => {
  await waitBody(alice, { channel: 'open' });
  await waitBody(bob, { channel: 'open' });
  await chat(alice, bob, 'Hello Bob, can you see me?');
  await chat(bob, alice, 'Loud and clear, Alice! ✓ <b>not bold</b>');
  assert(await bob.page.locator('#chat-log b').count() === 0, 'chat text was rendered as HTML');

  const content = randomBytes(300 * 1024 + 123);  // ~19 chunks, last one partial
  const digest = createHash('sha256').update(content).digest('hex');
  await alice.page.setInputFiles('#file-input', { name: 'holiday-photo.bin', mimeType: 'application/octet-stream', buffer: content });
  await alice.page.click('#file-send');
  const link = bob.page.locator('#files li[data-direction="received"] a', { hasText: 'holiday-photo.bin' });
  await link.waitFor().catch(() => { throw new Error('bob never received the file'); });
  const got = await bob.page.evaluate(async () => {
    const a = document.querySelector('#files li[data-direction="received"] a');
    const bytes = await (await fetch(a.href)).arrayBuffer();
    const hash = await crypto.subtle.digest('SHA-256', bytes);
    return { size: bytes.byteLength, name: a.download, sha: [...new Uint8Array(hash)].map((b) => b.toString(16).padStart(2, '0')).join('') };
  });
  assert(got.size === content.length, `received ${got.size} bytes, sent ${content.length}`);
  assert(got.sha === digest, 'received file differs from the one sent');
  assert(got.name === 'holiday-photo.bin', `received file named ${got.name}`);
  for (const p of [alice, bob]) {
    const percent = await p.page.getAttribute('#file-progress', 'data-percent');
    assert(percent === '100', `${p.label}: progress bar at ${percent}%`);
  }
  await Promise.all([screenshot(alice, '03-chat-file'), screenshot(bob, '03-chat-file')]);
});

test('4. hang-up on either page returns the other to idle', async () => {
  await hangUpAndCheck(alice, bob);
  await screenshot(bob, '04-peer-hung-up');
  // The other direction, in a fresh call the callee places.
  await call(bob, alice, 'alice');
  await Promise.all([waitConnected(alice), waitConnected(bob)]);
  await hangUpAndCheck(bob, alice);
});

test('5. a page reloading mid-call frees its name and the partner is told', async () => {
  await call(alice, bob, 'bob');
  await Promise.all([waitConnected(alice), waitConnected(bob)]);
  await bob.page.reload();
  await waitBody(alice, { state: 'idle', connection: 'none' });
  await waitNotice(alice, 'peer_hung_up', 'bob');
  await login(bob, 'bob');  // the name is free again
  await call(alice, bob, 'bob');  // and reaches the new page
  await Promise.all([waitConnected(alice), waitConnected(bob)]);
  await waitRemoteVideoPlays(bob);
  await hangUpAndCheck(alice, bob);
});

test('6. logging in with a taken name shows the error in the page', async () => {
  carol = await newPeer('carol');
  await carol.page.goto(base);
  await carol.page.fill('#username', 'alice');
  await carol.page.click('#login-btn');
  const text = await waitNotice(carol, 'name_taken', 'alice');
  assert(/taken/i.test(text), `name_taken notice reads ${JSON.stringify(text)}`);
  await waitBody(carol, { state: 'logged-out' });
  assert(await carol.page.isVisible('#login-form'), 'login form hidden after a failed login');
  await screenshot(carol, '06-name-taken');
  await login(carol, 'carol');
});

test('7. calling an offline user or a busy user shows a readable message', async () => {
  await carol.page.fill('#callee', 'nobody-here');
  await carol.page.click('#call-btn');
  await waitNotice(carol, 'unknown_user', 'nobody-here');
  await waitBody(carol, { state: 'idle' });
  await call(alice, bob, 'bob');
  await carol.page.fill('#callee', 'bob');
  await carol.page.click('#call-btn');
  await waitNotice(carol, 'busy', 'bob');
  await waitBody(carol, { state: 'idle' });
  await screenshot(carol, '07-busy');
  await waitBody(bob, { state: 'in-call', peer: 'alice' });
  await hangUpAndCheck(alice, bob);
});

test('8. camera denied: a readable message, and a receive-only call with chat still works', async () => {
  dave = await newPeer('dave', { denyCamera: true });
  await login(dave, 'dave');
  await waitNotice(dave, 'camera_denied', 'denied');
  assert(await body(dave, 'media') === 'none', 'dave should have no local media');
  await call(dave, carol, 'carol');
  await Promise.all([waitConnected(dave), waitConnected(carol)]);
  await waitRemoteVideoPlays(dave);  // dave sees carol through a recvonly transceiver
  await waitBody(dave, { channel: 'open' });
  await chat(dave, carol, 'I have no camera but I can see you');
  await screenshot(dave, '08-receive-only');
  await hangUpAndCheck(carol, dave);
});

test('9. server restart: the page says so, reconnects, its session is gone: it asks to log in again', async () => {
  await server.stop();
  await waitBody(alice, { signaling: 'reconnecting' });
  await waitNotice(alice, 'signaling_lost', 'Reconnecting');
  await screenshot(alice, '09-signaling-lost');
  await server.start();
  // The new server process does not know the token: the resume is refused (invalid_token).
  for (const p of [alice, bob]) {
    await waitBody(p, { signaling: 'open', state: 'logged-out' }, 30_000);
    await waitNotice(p, 'invalid_token', 'Log in again');
    assert(await stored(p) === null, `${p.label}: the spent session is still stored`);
    assert(await p.page.inputValue('#username') === p.label, `${p.label}: the login form lost the name`);
  }
  await Promise.all([login(alice, 'alice'), login(bob, 'bob')]);
  await call(bob, alice, 'alice');
  await Promise.all([waitConnected(alice), waitConnected(bob)]);
  await hangUpAndCheck(bob, alice);
});

test('10. Decline: the callee goes back to idle and the caller sees the call end, with a notice on each page', async () => {
  await dial(bob, alice, 'alice');
  await alice.page.click('#decline-btn');
  await waitBody(alice, { state: 'idle', connection: 'none' });
  await waitNotice(alice, 'declined', 'bob');
  await waitBody(bob, { state: 'idle', connection: 'none' });
  await waitNotice(bob, 'declined', 'alice');
  await screenshot(bob, '10-declined');
  for (const p of [alice, bob]) assert(await p.page.evaluate(() => window.pc === null), `${p.label}: peer connection still set after the decline`);
});

test('11. signaling cut mid-call (TCP reset): the call goes on, the page resumes the session, then chat, renegotiation and hang-up work', async () => {
  proxy = new TcpProxy(server.port);
  await proxy.start();
  await alice.page.goto(proxy.base);  // alice's page and its WebSocket now go through the proxy
  await login(alice, 'alice');
  const session0 = await stored(alice);
  assert(session0?.token?.length === 22 && session0.graceMs > 0, `alice: no resumable session stored: ${JSON.stringify(session0)}`);
  await call(alice, bob, 'bob');
  await Promise.all([waitConnected(alice), waitConnected(bob)]);
  await Promise.all([waitRemoteVideoPlays(alice), waitRemoteVideoPlays(bob)]);
  const before = await stored(alice);
  assert(before.lastSeq > 0, `alice: lastSeq not kept: ${JSON.stringify(before)}`);
  const upgrades = proxy.upgrades;

  proxy.blocked = true;  // no reconnect for now
  assert(proxy.cut() > 0, 'nothing to cut: alice has no connection through the proxy');
  await waitBody(alice, { signaling: 'reconnecting', state: 'in-call', connection: 'connected' });
  await waitNotice(alice, 'signaling_lost', 'Reconnecting');
  const status = await alice.page.textContent('#status');
  assert(/reconnecting/i.test(status), `alice: the status reads ${JSON.stringify(status)}`);
  await screenshot(alice, '11-reconnecting');
  // While the signaling is down the media goes on, both ways; bob is told nothing.
  await Promise.all([waitRemoteVideoAdvances(alice, 'during the outage'), waitRemoteVideoAdvances(bob, 'during the outage')]);
  assert(await body(alice, 'signaling') === 'reconnecting', 'alice reconnected while the proxy refused connections');
  await waitBody(bob, { state: 'in-call', peer: 'alice', connection: 'connected' });
  assert(await bob.page.locator('#notices .notice[data-code="peer_hung_up"]').count() === 0, 'bob was told alice hung up');

  proxy.blocked = false;
  await waitBody(alice, { signaling: 'open', user: 'alice', state: 'in-call', peer: 'bob' }, 10_000);
  await waitNotice(alice, 'resumed', 'goes on');
  assert(proxy.upgrades > upgrades, 'alice resumed without a new connection through the proxy');
  const after = await stored(alice);
  assert(after.token !== before.token && after.token.length === 22, `alice: the token did not rotate: ${before.token} -> ${after.token}`);
  assert(after.lastSeq >= before.lastSeq, `alice: lastSeq went back: ${before.lastSeq} -> ${after.lastSeq}`);
  await Promise.all([waitRemoteVideoAdvances(alice, 'after the resume'), waitRemoteVideoAdvances(bob, 'after the resume')]);
  await chat(alice, bob, 'Still there after the drop?');
  await chat(bob, alice, 'Never left.');
  // A renegotiation (ICE restart offer) through the resumed session is answered without ringing.
  await alice.page.evaluate(() => window.demo.restartIce());
  await alice.page.waitForFunction(() => window.pc?.signalingState === 'stable' && [...document.querySelectorAll('#log li')].some((li) => li.textContent.includes('ICE restart offer sent')));
  await bob.page.waitForFunction(() => [...document.querySelectorAll('#log li')].some((li) => li.textContent.includes('(renegotiation)')));
  await waitBody(bob, { state: 'in-call', peer: 'alice' });
  await Promise.all([waitConnected(alice), waitConnected(bob)]);
  // bob's hang-up reaches alice over her new connection.
  await hangUpAndCheck(bob, alice);
  assert((await stored(alice)).lastSeq > after.lastSeq, 'alice: lastSeq did not move after the resume');
});

test('12. a call placed while the callee has no signaling connection rings once the callee resumes', async () => {
  await login(carol, 'carol');  // carol's page asks for a login since the server restart
  proxy.blocked = true;
  assert(proxy.cut() > 0, 'nothing to cut');
  await waitBody(alice, { signaling: 'reconnecting', state: 'idle' });
  await carol.page.fill('#callee', 'alice');
  await carol.page.click('#call-btn');
  await carol.page.waitForFunction(() => [...document.querySelectorAll('#log li')].some((li) => li.textContent.includes('offer sent to alice')));
  await sleep(300);  // the offer reaches the server while alice has no connection
  assert(await body(alice, 'signaling') === 'reconnecting', 'alice reconnected while the proxy refused connections');
  proxy.blocked = false;
  // The offer waited for alice's session and is replayed after the resume: it rings.
  await waitRinging(alice, 'carol');
  await waitBody(alice, { signaling: 'open' });
  await alice.page.click('#accept-btn');
  await waitBody(alice, { state: 'in-call', peer: 'carol' });
  await waitBody(carol, { state: 'in-call', peer: 'alice' });
  await Promise.all([waitConnected(alice), waitConnected(carol)]);
  await waitRemoteVideoPlays(alice);
});

test('13. a page reloaded while reconnecting takes its session back and ends the call the reload lost', async () => {
  proxy.blocked = true;
  assert(proxy.cut() > 0, 'nothing to cut');
  await waitBody(alice, { signaling: 'reconnecting', state: 'in-call', peer: 'carol' });
  await alice.page.reload();  // the page loads; its signaling stays blocked for now
  await waitBody(alice, { state: 'logging-in', signaling: 'reconnecting' });
  proxy.blocked = false;
  await waitBody(alice, { state: 'idle', user: 'alice', signaling: 'open' }, 10_000);
  await waitNotice(alice, 'resumed', 'Welcome back');
  // The reload ended alice's side of the call: the resumed session tells carol.
  await waitBody(carol, { state: 'idle', connection: 'none' });
  await waitNotice(carol, 'peer_hung_up', 'alice');
  await waitBody(alice, { media: 'camera' });
  await call(carol, alice, 'alice');  // and the resumed session takes calls
  await Promise.all([waitConnected(alice), waitConnected(carol)]);
  await hangUpAndCheck(alice, carol);
});

test('14. another tab resuming the session takes it over: the first page says so and does not reconnect', async () => {
  const session = await stored(alice);
  const tab = await alice.context.newPage();  // same profile, its own sessionStorage: given the token
  const other = { label: 'alice-tab2', page: tab };
  tab.on('pageerror', (error) => alice.errors.push(`second tab: ${error}`));
  await tab.addInitScript((value) => {
    if (!sessionStorage.getItem('signaling-session')) sessionStorage.setItem('signaling-session', value);
  }, JSON.stringify(session));
  await tab.goto(alice.page.url());
  await waitBody(other, { state: 'idle', user: 'alice', signaling: 'open' });
  await waitBody(alice, { signaling: 'closed', state: 'logged-out' });
  await waitNotice(alice, 'session_taken_over', 'another connection');
  await screenshot(alice, '14-taken-over');
  const upgrades = proxy.upgrades;
  await sleep(1500);
  assert(proxy.upgrades === upgrades && await body(alice, 'signaling') === 'closed', 'the page that lost its session reconnected');
  await tab.close({ runBeforeUnload: true });  // a goodbye: the session ends, the name is free
  await login(alice, 'alice');  // the first page can log in again
});

test(`15. an unanswered call ends on both pages with a no-answer notice after the ring timeout (${RING_TIMEOUT_S} s); calling again at once is refused readably`, async () => {
  const started = Date.now();
  await dial(alice, bob, 'bob');
  await waitBody(alice, { state: 'idle', connection: 'none' }, (RING_TIMEOUT_S + 5) * 1000);
  await waitBody(bob, { state: 'idle', connection: 'none' });
  const elapsed = (Date.now() - started) / 1000;
  assert(elapsed >= RING_TIMEOUT_S - 1, `the call ended after ${elapsed} s, before the ring timeout`);
  const [aliceText, bobText] = await Promise.all([waitNotice(alice, 'no_answer', 'bob'), waitNotice(bob, 'no_answer', 'alice')]);
  assert(/no answer/i.test(aliceText) && /no answer/i.test(bobText), `no-answer notices read ${JSON.stringify([aliceText, bobText])}`);
  await Promise.all([screenshot(alice, '15-no-answer'), screenshot(bob, '15-no-answer')]);
  for (const p of [alice, bob]) assert(await p.page.evaluate(() => window.pc === null), `${p.label}: peer connection still set after the ring-out`);
  // The server's redial back-off: alice may not ring bob again right away.
  await alice.page.fill('#callee', 'bob');
  await alice.page.click('#call-btn');
  const text = await waitNotice(alice, 'redial_too_soon', 'bob');
  assert(/call again in \d+ s/.test(text), `redial_too_soon notice reads ${JSON.stringify(text)}`);
  await waitBody(alice, { state: 'idle', connection: 'none' });
  await sleep(300);
  assert(await body(bob, 'state') === 'idle', 'bob rang although the server refused the offer');
});

/** The local and remote candidate types of the pair the peer connection selected. */
async function selectedPair(peer) {
  return peer.page.evaluate(async () => {
    const stats = await window.pc.getStats();
    let pair = null;
    stats.forEach((report) => {
      if (report.type === 'transport' && report.selectedCandidatePairId) pair = stats.get(report.selectedCandidatePairId);
    });
    if (!pair) stats.forEach((report) => { if (report.type === 'candidate-pair' && report.nominated && report.state === 'succeeded') pair = report; });
    if (!pair) return null;
    const local = stats.get(pair.localCandidateId);
    const remote = stats.get(pair.remoteCandidateId);
    return { local: local?.candidateType, remote: remote?.candidateType, relayProtocol: local?.relayProtocol, url: local?.url };
  });
}

test('16. TURN: two pages with ?iceTransportPolicy=relay call through coturn with the credentials of their login replies; video flows over the relay', async () => {
  if (!coturn) throw new Skip(`${TURNSERVER} not found`);
  const [grace, heidi] = await Promise.all([newPeer('grace'), newPeer('heidi')]);
  await Promise.all([grace, heidi].map((p) => p.page.goto(`${base}?iceTransportPolicy=relay`)));
  await Promise.all([login(grace, 'grace'), login(heidi, 'heidi')]);
  await waitBody(grace, { media: 'camera' });
  await call(grace, heidi, 'heidi');
  await Promise.all([waitConnected(grace), waitConnected(heidi)]);
  for (const p of [grace, heidi]) {
    const config = await p.page.evaluate(() => window.pc.getConfiguration());
    assert(config.iceTransportPolicy === 'relay', `${p.label}: iceTransportPolicy ${config.iceTransportPolicy}`);
    const turn = config.iceServers.find((server) => [].concat(server.urls).includes(coturn.url));
    assert(turn && turn.username.endsWith(`:${p.label}`), `${p.label}: no TURN credentials of its own: ${JSON.stringify(config.iceServers)}`);
    const pair = await selectedPair(p);
    assert(pair?.local === 'relay', `${p.label}: the selected candidate pair is not relayed: ${JSON.stringify(pair)}`);
  }
  const [wGrace, wHeidi] = await Promise.all([waitRemoteVideoPlays(grace), waitRemoteVideoPlays(heidi)]);
  assert(wGrace > 0 && wHeidi > 0, 'videoWidth is 0');
  await Promise.all([waitRemoteVideoAdvances(grace, 'over the relay'), waitRemoteVideoAdvances(heidi, 'over the relay')]);
  await Promise.all([screenshot(grace, '16-turn-relay'), screenshot(heidi, '16-turn-relay')]);
  await hangUpAndCheck(grace, heidi);
});

test('17. no uncaught errors in any page', async () => {
  const errors = peers.flatMap((p) => p.errors.map((e) => `${p.label}: ${e}`));
  assert(errors.length === 0, `uncaught page errors:\n${errors.join('\n')}`);
});

// ---------------------------------------------------------------------------------------------
// Over https:// and wss:// on a host name that is not localhost, where getUserMedia needs a secure
// context (localhost and 127.0.0.1 are secure even over http, so the tests above never exercise
// it). A second server with a development certificate for signaling.test; a Chromium that maps
// that name to 127.0.0.1 (--host-resolver-rules) and accepts exactly that certificate, by the
// SHA-256 of its public key (--ignore-certificate-errors-spki-list; Chromium honours it only with
// a --user-data-dir, which launchPersistentContext passes). The control: the plain-HTTP server
// at http://signaling.test:PORT/, the same address, is not a secure context.

const TLS_HOST = 'signaling.test';
const MAP_TLS_HOST = `--host-resolver-rules=MAP ${TLS_HOST} 127.0.0.1`;

/**
 * The server with `--tls-self-signed --tls-name TLS_HOST`. Once started: `certificate` (the
 * X509Certificate it serves, checked to be the one whose fingerprint it printed and to be valid
 * for TLS_HOST) and `spki` (the base64 SHA-256 of its SubjectPublicKeyInfo, what Chromium pins).
 */
class TlsServer extends Server {
  constructor(command, port) {
    super([...command, '--tls-self-signed', '--tls-name', TLS_HOST], port);
    this.url = `https://${TLS_HOST}:${port}/`;
    this.certificate = null;
    this.spki = null;
  }

  /** Up once a TLS handshake completes (trusting anything: the checks come after). */
  async answers() {
    this.certificate = await this.handshake();
    return true;
  }

  handshake() {
    return new Promise((resolve, reject) => {
      const socket = tls.connect({
        host: '127.0.0.1', port: this.port, servername: TLS_HOST, ALPNProtocols: ['http/1.1'],
        rejectUnauthorized: false, timeout: 1000,
      });
      socket.once('secureConnect', () => {
        const { raw } = socket.getPeerCertificate();
        socket.end();
        resolve(new X509Certificate(raw));
      });
      socket.once('error', reject);
      socket.once('timeout', () => socket.destroy(new Error('TLS handshake timed out')));
    });
  }

  async start() {
    await super.start();
    const cert = this.certificate;
    // The fingerprint it printed (stdout, `SHA-256 fingerprint: AB:CD:…`) is the served certificate's.
    let printed;
    for (const deadline = Date.now() + 3000; !printed && Date.now() < deadline; await sleep(50)) {
      printed = this.output.map((line) => /^SHA-256 fingerprint: ([0-9A-F:]{95})$/.exec(line)?.[1]).find(Boolean);
    }
    assert(printed, `the TLS server printed no SHA-256 fingerprint:\n${this.output.slice(-10).join('\n')}`);
    assert(printed === cert.fingerprint256, `the TLS server printed fingerprint ${printed} but serves a certificate with ${cert.fingerprint256}`);
    assert(cert.checkHost(TLS_HOST), `the development certificate is not valid for ${TLS_HOST}: ${cert.subjectAltName}`);
    // And Node, trusting that certificate alone, gets the page for TLS_HOST (chain and name checked).
    const status = await new Promise((resolve, reject) => {
      https.get({ host: '127.0.0.1', port: this.port, servername: TLS_HOST, path: '/', ca: cert.toString(),
        headers: { host: `${TLS_HOST}:${this.port}` }, timeout: 5000 }, (response) => {
        response.resume();
        resolve(response.statusCode);
      }).once('error', reject).once('timeout', function () { this.destroy(new Error('timed out')); });
    }).catch((error) => { throw new Error(`GET ${this.url} trusting only the development certificate: ${error.message}`); });
    assert(status === 200, `GET ${this.url}: HTTP ${status}`);
    this.spki = createHash('sha256').update(cert.publicKey.export({ type: 'spki', format: 'der' })).digest('base64');
  }
}

let tlsServer;
let erin, frank;

/** Where a page is: its security, scheme, host and whether it has a camera API. */
const whereIs = (page) => page.evaluate(() => ({
  isSecureContext: window.isSecureContext,
  protocol: location.protocol,
  host: location.host,
  mediaDevices: typeof navigator.mediaDevices,
}));

test(`18. a second server over https:// with a development certificate for ${TLS_HOST}: the fingerprint it prints is the certificate it serves; Chromium accepts exactly that certificate (its SPKI pinned), and refuses the page without the pin; with it the page is a secure context`, async () => {
  tlsServer = new TlsServer(server.command, await freePort());
  await tlsServer.start();
  const pinned = { args: [MAP_TLS_HOST, `--ignore-certificate-errors-spki-list=${tlsServer.spki}`] };
  let unpinned;
  [erin, frank, unpinned] = await Promise.all([newPeer('erin', pinned), newPeer('frank', pinned), newPeer('unpinned', { args: [MAP_TLS_HOST] })]);
  // The same browser without the pin: a certificate error, so the pin is what accepts it.
  const refused = await unpinned.page.goto(tlsServer.url).then(() => 'the page loaded', (error) => error.message);
  peers.splice(peers.indexOf(unpinned), 1);
  await unpinned.context.close();
  await rm(unpinned.profile, { recursive: true, force: true });
  assert(refused.includes('net::ERR_CERT_AUTHORITY_INVALID'), `without the SPKI pin, ${tlsServer.url}: expected net::ERR_CERT_AUTHORITY_INVALID, got: ${brief(refused)}`);
  for (const peer of [erin, frank]) {
    peer.websockets = [];
    peer.page.on('websocket', (socket) => peer.websockets.push(socket.url()));
    await peer.page.goto(tlsServer.url).catch((error) => {
      throw new Error(`${peer.label}: Chromium with the development certificate's SPKI pinned refused ${tlsServer.url}: ${brief(error)}`);
    });
    const where = await whereIs(peer.page);
    const want = { isSecureContext: true, protocol: 'https:', host: `${TLS_HOST}:${tlsServer.port}`, mediaDevices: 'object' };
    assert(JSON.stringify(where) === JSON.stringify(want), `${peer.label} at ${tlsServer.url}: ${JSON.stringify(where)}, expected ${JSON.stringify(want)}`);
  }
});

test(`19. over https:// and wss:// on ${TLS_HOST}: the camera starts, a call connects, video frames advance both ways, hang-up`, async () => {
  await Promise.all([login(erin, 'erin'), login(frank, 'frank')]);
  await Promise.all([waitBody(erin, { media: 'camera' }), waitBody(frank, { media: 'camera' })]);
  const wss = `wss://${TLS_HOST}:${tlsServer.port}/ws`;
  for (const peer of [erin, frank]) {
    assert(peer.websockets.length > 0 && peer.websockets.every((url) => url === wss), `${peer.label}: WebSocket URLs ${JSON.stringify(peer.websockets)}, expected ${wss}`);
  }
  await call(erin, frank, 'frank');
  await Promise.all([waitConnected(erin), waitConnected(frank)]);
  await Promise.all([waitRemoteVideoPlays(erin), waitRemoteVideoPlays(frank)]);
  await Promise.all([waitRemoteVideoAdvances(erin, 'over https'), waitRemoteVideoAdvances(frank, 'over https')]);
  await Promise.all([screenshot(erin, '19-https-call'), screenshot(frank, '19-https-call')]);
  await hangUpAndCheck(frank, erin);
});

test(`20. control: the plain-HTTP server at http://${TLS_HOST}:PORT/ (127.0.0.1 too) is not a secure context: no navigator.mediaDevices, the page logs in without a camera and says why`, async () => {
  const tab = await erin.context.newPage();  // the browser that just held the https call
  const plain = { label: 'erin-http', page: tab };
  tab.on('pageerror', (error) => erin.errors.push(`http tab: ${error}`));
  const url = `http://${TLS_HOST}:${server.port}/`;
  await tab.goto(url);
  const where = await whereIs(tab);
  const want = { isSecureContext: false, protocol: 'http:', host: `${TLS_HOST}:${server.port}`, mediaDevices: 'undefined' };
  assert(JSON.stringify(where) === JSON.stringify(want), `${url}: ${JSON.stringify(where)}, expected ${JSON.stringify(want)}`);
  await login(plain, 'erin');
  await waitBody(plain, { media: 'none' });
  await waitNotice(plain, 'camera_unavailable', 'https');
  await screenshot(plain, '20-http-no-camera');
  await tab.close();
  const errors = [erin, frank].flatMap((p) => p.errors.map((e) => `${p.label}: ${e}`));
  assert(errors.length === 0, `uncaught page errors:\n${errors.join('\n')}`);
});

// ---------------------------------------------------------------------------------------------
// Runner

async function main() {
  await mkdir(ARTIFACTS, { recursive: true });
  for (const old of await readdir(ARTIFACTS)) {
    if (old.endsWith('.png')) await rm(path.join(ARTIFACTS, old));  // no stale screenshots from an earlier run
  }
  const port = await freePort();
  base = `http://127.0.0.1:${port}/`;
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  try {
    coturn = new Coturn(await freePort());
    if (!await coturn.start()) coturn = null;
    const turnFlags = coturn ? ['--turn-url', coturn.url, '--turn-secret', TURN_SECRET] : [];
    server = new Server([...serverCommand, '--ice-server', ICE_SERVER, '--ring-timeout', String(RING_TIMEOUT_S), ...turnFlags], port);
    console.log(`e2e: server ${server.command.join(' ').replace(TURN_SECRET, '<secret>')} --addr 127.0.0.1:${port}; browser ${CHROMIUM}${coturn ? `; coturn ${coturn.url}` : ''}`);
    await server.start();
    for (const { name, fn } of tests) {
      if (failed) {
        // The tests build on each other: after a failure the rest would only repeat it.
        skipped += 1;
        console.log(`skip ${name}`);
        continue;
      }
      const started = Date.now();
      try {
        await withTimeout(fn(), TEST_TIMEOUT, name);
        passed += 1;
        console.log(`ok   ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
      } catch (error) {
        if (error instanceof Skip) {
          skipped += 1;
          console.log(`skip ${name}: ${error.message}`);
          continue;
        }
        failed += 1;
        console.log(`FAIL ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)\n     ${brief(error)}`);
        await report(name);
      }
    }
  } catch (error) {
    failed += 1;
    console.log(`FAIL setup: ${brief(error)}`);
  } finally {
    await closePeers();
    await proxy?.stop();
    await server?.stop();
    await tlsServer?.stop();
    await coturn?.stop();
  }
  console.log(`screenshots: ${ARTIFACTS}`);
  console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
  return failed === 0 && passed > 0 ? 0 : 1;
}

/** The gist of an error: no ANSI colours, no long Playwright call logs. */
function brief(error) {
  const text = String(error?.message ?? error).replace(/\x1b\[[0-9;]*m/g, '');
  const lines = text.split('\n').filter((l) => l.trim() && !/^\s*(Call log:|-|\d+ ×)/.test(l));
  return lines.slice(0, 4).join('\n     ');
}

/** After a failure: a screenshot and the tail of the in-page event log of every page, and the server's output. */
async function report(name) {
  for (const peer of peers) {
    await screenshot(peer, `FAIL-${name.split('.')[0].padStart(2, '0')}`);
    const lines = await pageLog(peer);
    if (lines.length) console.log(`     --- ${peer.label} page log (last ${lines.length}):\n       ${lines.join('\n       ')}`);
    if (peer.errors.length) console.log(`     --- ${peer.label} uncaught errors:\n       ${peer.errors.join('\n       ')}`);
  }
  console.log(`     --- server output (last 15 lines${server.proc?.exitCode !== null ? ', server exited' : ''}):\n       ${server.output.slice(-15).join('\n       ')}`);
  if (coturn) console.log(`     --- turnserver output (last 10 lines):\n       ${coturn.output.slice(-10).join('\n       ')}`);
  if (tlsServer) console.log(`     --- TLS server output (last 15 lines${tlsServer.proc?.exitCode !== null ? ', server exited' : ''}):\n       ${tlsServer.output.slice(-15).join('\n       ')}`);
}

const watchdog = setTimeout(() => {
  console.log(`FAIL the whole run exceeded ${RUN_TIMEOUT / 1000} s`);
  console.log('0 passed, 1 failed');
  server?.proc?.kill('SIGKILL');
  coturn?.proc?.kill('SIGKILL');
  tlsServer?.proc?.kill('SIGKILL');
  process.exit(1);
}, RUN_TIMEOUT);
watchdog.unref();

process.exitCode = await main();
clearTimeout(watchdog);
