// The webcam call of the WebRTC tutorial, with today's APIs, speaking its JSON wire messages.
//
// State is mirrored on <body> for people and tests alike:
//   data-signaling  connecting | open | reconnecting | closed   (closed: another connection took the session)
//   data-state      logged-out | logging-in | idle | calling | ringing | answering | in-call
//                   (ringing: an incoming call waits for Accept or Decline; answering: accepted,
//                   the answer is being made)
//   data-connection none | new | connecting | connected | disconnected | failed | closed
//   data-channel    closed | open            (the chat/file RTCDataChannel)
//   data-media      pending | camera | audio-only | none
//   data-user, data-peer
// Notices are `#notices .notice[data-code=…]`; window.pc is the current RTCPeerConnection.
// Query parameters: ?ws=URL overrides the signaling URL (default: ws(s)://<this host>/ws);
// ?iceTransportPolicy=relay makes calls use TURN relays only (no direct or STUN paths), to test
// a TURN server.
//
// ICE servers: /config.json's (STUN only: anyone can fetch it) until the login; a successful
// login or resume reply's "iceServers" (STUN, and TURN with credentials minted for this user)
// replace them when the server sends some.
//
// Sessions (docs/protocol.md, "Sessions"): the page logs in with "resumable":true and keeps the
// token, graceMs and the highest seq it has handled in sessionStorage. When the signaling
// connection drops (not closed by the page, not taken over: close code 4000), the call and its
// media go on while the page reconnects with back-off for up to graceMs and sends
// {"type":"resume","token","lastSeq"} first; the messages it missed are then replayed and handled
// as usual. A server that gives no token gets today's behaviour: a drop ends the call and the
// page logs in again once it is back.

const $ = (selector) => document.querySelector(selector);

const params = new URLSearchParams(location.search);
const WS_URL = params.get('ws') || `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
const ICE_TRANSPORT_POLICY = params.get('iceTransportPolicy') === 'relay' ? 'relay' : 'all';

const CHUNK_SIZE = 16 * 1024;           // one data channel message
const READ_SIZE = 256 * 1024;           // one File.slice read
const BUFFER_HIGH = 1024 * 1024;        // pause sending above this bufferedAmount
const BUFFER_LOW = 256 * 1024;          // resume below this
const ANSWER_TIMEOUT_MS = 60_000;       // give up on an unanswered call (servers without a ring timeout only)
const ICE_RESTART_TIMEOUT_MS = 15_000;  // a failed peer connection has this long to recover after an ICE restart
const RESUME_DELAYS_MS = [250, 500, 1000, 2000];  // back-off between resume attempts (the last one repeats)
const CONNECT_TIMEOUT_MS = 5000;        // a resume attempt whose socket does not open by then is dropped
const OUTBOX_LIMIT = 500;               // messages kept for the signaling connection while it is resuming
const SESSION_KEY = 'signaling-session';
const RELOGIN_RETRIES = 3;              // name_taken right after a reconnect: the old connection may linger

const ui = {
  status: $('#status'),
  notices: $('#notices'),
  username: $('#username'),
  loginForm: $('#login-form'),
  loginBtn: $('#login-btn'),
  callForm: $('#call-form'),
  callee: $('#callee'),
  callBtn: $('#call-btn'),
  hangupBtn: $('#hangup-btn'),
  callStatus: $('#call-status'),
  incomingName: $('#incoming-name'),
  acceptBtn: $('#accept-btn'),
  declineBtn: $('#decline-btn'),
  localVideo: $('#local-video'),
  remoteVideo: $('#remote-video'),
  localLabel: $('#local-label'),
  remoteLabel: $('#remote-label'),
  localPlaceholder: $('#local-placeholder'),
  remotePlaceholder: $('#remote-placeholder'),
  chatLog: $('#chat-log'),
  chatForm: $('#chat-form'),
  chatInput: $('#chat-input'),
  chatSend: $('#chat-send'),
  fileForm: $('#file-form'),
  fileInput: $('#file-input'),
  fileSend: $('#file-send'),
  progress: $('#file-progress'),
  progressLabel: $('#file-progress-label'),
  files: $('#files'),
  log: $('#log'),
};

// ---------------------------------------------------------------------------------------------
// State

let iceServers = [];
let ws = null;
let reconnectAttempt = 0;
let reconnectTimer = null;
let unloading = false;

// The resumable session, mirrored in sessionStorage[SESSION_KEY]:
//   { username, token, graceMs, lastSeq, peer, resumeDeadline? }
// peer: the call partner, so that a page reloaded while resuming can end the call it lost.
let session = null;
let resuming = null;      // while the session is being resumed: { deadline, attempt, afterReload, lostPeer }
let connectTimer = null;  // the current resume attempt's socket has not opened yet
let outbox = [];          // messages sent while resuming; sent once the session is back
let stalePeer = null;     // after a reload resumed the session: the partner of the call the reload ended,
                          // until the server has answered the marker close (see onResume)

let myName = null;        // the name we are logged in with (kept across reconnects)
let pendingName = null;   // the name a login is in flight for
let reloginTries = 0;

let localStream = null;
let media = null;           // the getUserMedia attempt: a promise, started once after the first login

let pc = null;
let peer = null;
let channel = null;
let remoteCandidates = [];  // candidates that arrived before the remote description
let answerTimer = null;
let iceRestartTimer = null;
let offerer = false;        // this page made the first offer of the current call (it restarts ICE)
let pageTitle = document.title;
let connectedOnce = false;  // the current call got as far as an open data channel
let incoming = null;        // the file being received
let sending = false;

let inbox = Promise.resolve();  // server messages are handled one at a time, in order

// ---------------------------------------------------------------------------------------------
// Small helpers

function log(text) {
  const li = document.createElement('li');
  li.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  ui.log.append(li);
  while (ui.log.children.length > 300) ui.log.firstElementChild.remove();
  ui.log.scrollTop = ui.log.scrollHeight;
}

/** Shows a message in the page. A notice with the same code replaces the previous one. */
function notify(code, text, level = 'info', { timeout = level === 'info' ? 8000 : 0 } = {}) {
  dismiss(code);
  const div = document.createElement('div');
  div.className = `notice ${level}`;
  div.dataset.code = code;
  div.setAttribute('role', level === 'error' ? 'alert' : 'status');
  const span = document.createElement('span');
  span.textContent = text;
  const close = document.createElement('button');
  close.type = 'button';
  close.setAttribute('aria-label', 'Dismiss');
  close.textContent = '×';
  close.addEventListener('click', () => div.remove());
  div.append(span, close);
  ui.notices.prepend(div);
  while (ui.notices.children.length > 5) ui.notices.lastElementChild.remove();
  if (timeout) setTimeout(() => div.remove(), timeout);
  log(`[${code}] ${text}`);
}

function dismiss(...codes) {
  for (const code of codes) {
    for (const el of ui.notices.querySelectorAll(`.notice[data-code="${CSS.escape(code)}"]`)) el.remove();
  }
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function setBody(key, value) {
  if (value === null || value === undefined) delete document.body.dataset[key];
  else document.body.dataset[key] = value;
}

function saveSession() {
  try {
    if (session) sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
    else sessionStorage.removeItem(SESSION_KEY);
  } catch (error) {
    log(`sessionStorage: ${error.message}`);
  }
}

function loadSession() {
  try {
    const stored = JSON.parse(sessionStorage.getItem(SESSION_KEY));
    if (stored && typeof stored.token === 'string' && typeof stored.username === 'string'
        && Number.isSafeInteger(stored.lastSeq) && Number.isFinite(stored.graceMs)) return stored;
  } catch { /* nothing usable */ }
  return null;
}

function forgetSession() {
  session = null;
  saveSession();
}

function send(message) {
  if (resuming) {
    // The session is coming back: the server gets this once it has resumed.
    if (outbox.length >= OUTBOX_LIMIT) outbox.shift();
    outbox.push(message);
    log(`queued until the session resumes: ${message.type}`);
    return true;
  }
  if (!ws || ws.readyState !== WebSocket.OPEN) {
    log(`not sent (signaling down): ${message.type}`);
    return false;
  }
  ws.send(JSON.stringify(message));
  return true;
}

// ---------------------------------------------------------------------------------------------
// What the page shows

function setState(state) {
  setBody('state', state);
  setBody('peer', peer);
  refreshControls();
  ui.remoteLabel.textContent = peer ?? 'Nobody yet';
  const lines = {
    idle: 'Logged in. Type a name and press Call.',
    calling: `Calling ${peer}…`,
    ringing: `${peer} is calling you.`,
    answering: `Answering ${peer}…`,
    'in-call': `In a call with ${peer}.`,
  };
  if (lines[state]) ui.callStatus.textContent = lines[state];
  if (session && session.peer !== (peer ?? null)) {
    session.peer = peer ?? null;
    saveSession();
  }
  ui.incomingName.textContent = state === 'ringing' ? peer : '';
  document.title = state === 'ringing' ? `Incoming call from ${peer} · ${pageTitle}` : pageTitle;
  updateStatus();
}

function refreshControls() {
  const state = document.body.dataset.state;
  const online = document.body.dataset.signaling === 'open' && !resuming;
  const inCall = state === 'calling' || state === 'answering' || state === 'in-call';
  ui.callBtn.disabled = state !== 'idle' || !online;
  ui.callee.disabled = state !== 'idle';
  ui.hangupBtn.disabled = !inCall;  // a ringing call has Accept and Decline instead
  ui.acceptBtn.disabled = ui.declineBtn.disabled = state !== 'ringing';
  ui.loginBtn.disabled = state === 'logging-in';
  ui.username.disabled = state === 'logging-in';
}

function updateStatus() {
  refreshControls();
  const signaling = document.body.dataset.signaling;
  let text;
  if (signaling === 'connecting') text = 'Connecting to the signaling server…';
  else if (signaling === 'reconnecting' && resuming) text = pc ? 'Connection lost, reconnecting… (the call goes on)' : 'Connection lost, reconnecting…';
  else if (signaling === 'reconnecting') text = 'Signaling server unreachable, reconnecting…';
  else if (signaling === 'closed') text = 'Disconnected: the session moved to another connection';
  else if (myName && pendingName) text = `Logging in again as ${myName}…`;
  else if (myName) text = `Logged in as ${myName}`;
  else text = 'Connected, not logged in';
  ui.status.textContent = text;
}

function setChannelUi(open) {
  setBody('channel', open ? 'open' : 'closed');
  for (const el of [ui.chatInput, ui.chatSend, ui.fileInput]) el.disabled = !open;
  ui.fileSend.disabled = !open || sending;
}

function showVideo(video, stream, tile) {
  video.srcObject = stream;
  tile.classList.toggle('has-video', !!stream && stream.getVideoTracks().length > 0);
}

// ---------------------------------------------------------------------------------------------
// Configuration (ICE servers come from the server; none by default)

async function loadConfig() {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 3000);
  try {
    const response = await fetch('/config.json', { cache: 'no-store', signal: controller.signal });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const config = await response.json();
    if (Array.isArray(config.iceServers)) iceServers = config.iceServers;
    log(`ICE servers: ${iceServers.length ? JSON.stringify(iceServers) : 'none (host candidates only)'}`);
  } catch (error) {
    iceServers = [];
    log(`no /config.json (${error.message}); using no ICE servers`);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The "iceServers" of a successful login or resume reply (TURN credentials for this user, which
 * expire): they replace what the page had, and a running call gets them for its next ICE restart.
 */
function takeIceServers(message) {
  if (!Array.isArray(message.iceServers)) return;  // a server that hands out none
  iceServers = message.iceServers;
  const urls = iceServers.flatMap((server) => [].concat(server.urls ?? []));
  log(`ICE servers from the ${message.type} reply: ${urls.join(' ') || 'none'}`);  // not the credentials
  if (pc) {
    try {
      pc.setConfiguration({ ...pc.getConfiguration(), iceServers });
    } catch (error) {
      log(`the call keeps its ICE servers (${error.message})`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Signaling connection, with reconnect and backoff

function connect() {
  clearTimeout(reconnectTimer);
  reconnectTimer = null;
  setBody('signaling', reconnectAttempt || resuming ? 'reconnecting' : 'connecting');
  updateStatus();
  log(`connecting to ${WS_URL}${resuming ? ` (resume attempt ${resuming.attempt})` : ''}`);
  let socket;
  try {
    socket = new WebSocket(WS_URL);
  } catch (error) {
    notify('bad_ws_url', `Cannot open the signaling connection to ${WS_URL}: ${error.message}`, 'error');
    return;
  }
  ws = socket;
  clearTimeout(connectTimer);
  if (resuming) {
    // A socket that hangs while connecting must not eat the grace period. (Only while
    // connecting: closing an open socket would end the session.)
    connectTimer = setTimeout(() => {
      if (ws === socket && socket.readyState === WebSocket.CONNECTING) socket.close();
    }, Math.max(0, Math.min(CONNECT_TIMEOUT_MS, resuming.deadline - Date.now())));
  }
  socket.onopen = () => {
    if (ws !== socket) return;
    clearTimeout(connectTimer);
    if (resuming) {
      // The first message takes the session back; signaling stays "reconnecting" until the reply.
      log(`signaling connected; resuming ${session.username}'s session after seq ${session.lastSeq}`);
      socket.send(JSON.stringify({ type: 'resume', token: session.token, lastSeq: session.lastSeq }));
      return;
    }
    const wasReconnect = reconnectAttempt > 0;
    reconnectAttempt = 0;
    setBody('signaling', 'open');
    dismiss('signaling_lost');
    log('signaling connected');
    if (wasReconnect) notify('reconnected', 'Reconnected to the signaling server.', 'info', { timeout: 5000 });
    const name = myName ?? pendingName;
    if (name) login(name);
    updateStatus();
  };
  socket.onmessage = (event) => {
    if (ws !== socket) return;
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      log(`ignored a frame that is not JSON: ${String(event.data).slice(0, 80)}`);
      return;
    }
    inbox = inbox
      .then(() => receive(message))
      .catch((error) => {
        console.error(error);
        log(`error handling ${message.type}: ${error.message}`);
      });
  };
  socket.onclose = (event) => {
    if (ws !== socket || unloading) return;
    ws = null;
    clearTimeout(connectTimer);
    if (event.code === 4000) onTakenOver(event);
    else if (resuming) retryResume(event);
    else if (session && myName) startResume(event);
    else onSignalingLost(event);
  };
}

/** One server message, in order: skips what a resume replayed twice, then records its seq. */
async function receive(message) {
  const seq = Number.isSafeInteger(message.seq) ? message.seq : null;
  if (seq !== null && session && seq <= session.lastSeq) {
    log(`skipped ${message.type} #${seq}: handled already`);
    return;
  }
  try {
    await handleMessage(message);
  } finally {
    if (seq !== null && session && seq > session.lastSeq) {
      session.lastSeq = seq;
      saveSession();
    }
  }
}

/** A plain session's connection dropped: the server forgot us, the call is over. */
function onSignalingLost(event) {
  const delay = Math.round(Math.min(10_000, 500 * 2 ** reconnectAttempt) * (0.8 + Math.random() * 0.4));
  reconnectAttempt += 1;
  setBody('signaling', 'reconnecting');
  log(`signaling closed (code ${event.code}${event.reason ? `, ${event.reason}` : ''}); retry in ${delay} ms`);
  if (pc) endCall({ sendClose: false, notice: null });
  setBody('user', null);  // the server forgot us; data-user comes back with the next login
  const who = myName ? ` You will be logged in again as ${myName}.` : '';
  notify('signaling_lost',
    `Lost the connection to the signaling server. Reconnecting in ${(delay / 1000).toFixed(1)} s…${who}`,
    'warn');
  updateStatus();
  reconnectTimer = setTimeout(connect, delay);
}

// ---------------------------------------------------------------------------------------------
// Resuming a session after a drop

/** A resumable session's connection dropped: the server keeps it for graceMs; so does the call. */
function startResume(event) {
  resuming = { deadline: Date.now() + session.graceMs, attempt: 0, afterReload: false };
  outbox = [];
  setBody('signaling', 'reconnecting');
  log(`signaling closed (code ${event.code}${event.reason ? `, ${event.reason}` : ''}); resuming within ${session.graceMs} ms`);
  notify('signaling_lost',
    `Lost the connection to the signaling server. Reconnecting…${pc ? ` The call with ${peer} goes on meanwhile.` : ''}`,
    'warn');
  updateStatus();
  retryResume(null);
}

/** Schedules the next resume attempt with back-off, or gives up once the grace period is over. */
function retryResume(event) {
  if (event) log(`resume attempt ${resuming.attempt} failed (code ${event.code})`);
  const base = RESUME_DELAYS_MS[Math.min(resuming.attempt, RESUME_DELAYS_MS.length - 1)];
  const delay = Math.round(base * (0.8 + Math.random() * 0.4));
  if (Date.now() + delay >= resuming.deadline) {
    resumeWindowOver();
    return;
  }
  resuming.attempt += 1;
  reconnectTimer = setTimeout(connect, delay);
}

/** The grace period passed without a resume: the server has ended the session and the call. */
function resumeWindowOver() {
  const seconds = Math.round(session.graceMs / 1000);
  const afterReload = resuming.afterReload;
  resuming = null;
  outbox = [];
  forgetSession();
  log(`no resume within ${seconds} s: the session is over`);
  if (afterReload) {
    myName = null;
    pendingName = null;
    setState('logged-out');
  }
  if (pc) endCall({ sendClose: false, notice: null });
  notify('session_expired',
    `The signaling server could not be reached within ${seconds} s: the session has ended${myName ? ' and you will be logged in again when it is back' : ''}.`,
    'error');
  onSignalingLost({ code: 1006, reason: 'resume window over' });  // today's reconnect and re-login
}

function onResume(message) {
  if (!resuming || !session) {
    log('ignored a resume reply: not resuming');
    return;
  }
  const { afterReload, lostPeer } = resuming;
  resuming = null;
  const queued = outbox;
  outbox = [];
  if (message.success) {
    takeIceServers(message);
    session.token = message.token;
    if (Number.isFinite(message.graceMs)) session.graceMs = message.graceMs;
    if (typeof message.username === 'string') session.username = message.username;
    delete session.resumeDeadline;
    saveSession();
    myName = session.username;
    pendingName = null;
    reconnectAttempt = 0;
    setBody('user', myName);
    setBody('signaling', 'open');
    dismiss('signaling_lost', 'session_expired');
    log(`session resumed as ${myName}; replaying from seq ${session.lastSeq + 1}`);
    for (const m of queued) send(m);
    if (afterReload) {
      ui.localLabel.textContent = `You (${myName})`;
      // The reload ended the call this session was in; the partner has to be told.
      stalePeer = lostPeer ?? null;
      setState('idle');
      if (stalePeer) {
        // The first close ends the call on the server (if it is still up). The replay may still
        // hold messages of that call (a renegotiation offer would ring): they are ignored until
        // the server's not_in_call answer to the second close, which comes after all of them.
        send({ type: 'close', otherUsername: stalePeer });
        send({ type: 'close', otherUsername: stalePeer });
        const marker = stalePeer;
        setTimeout(() => { if (stalePeer === marker) stalePeer = null; }, 10_000);  // a server that does not answer
      }
      media ??= startMedia();
      notify('resumed', `Welcome back, ${myName}: your session was resumed${stalePeer ? ` (the call with ${stalePeer} ended with the reload)` : ''}.`, 'info', { timeout: 5000 });
    } else {
      notify('resumed', pc ? `Reconnected: the call with ${peer} goes on.` : 'Reconnected to the signaling server.', 'info', { timeout: 5000 });
    }
    updateStatus();
    return;
  }
  // Refused: this session cannot come back. The page ends the call and asks for a fresh login.
  const code = message.code || 'resume_failed';
  const name = session.username;
  const who = peer;
  forgetSession();
  if (pc || peer) endCall({ sendClose: false, notice: null });
  myName = null;
  pendingName = null;
  reconnectAttempt = 0;
  setBody('user', null);
  setBody('signaling', 'open');
  setState('logged-out');
  ui.username.value = name;
  const callEnded = who ? ` The call with ${who} has ended.` : '';
  const texts = {
    history_lost: `The server no longer had the messages missed while disconnected, so your session ended.${callEnded} Log in again.`,
    invalid_token: afterReload
      ? 'Your previous session has ended. Log in again.'
      : `Your session could not be resumed: it has expired or the server restarted.${callEnded} Log in again.`,
    invalid_last_seq: `The server refused to resume the session (${message.message || 'invalid lastSeq'}).${callEnded} Log in again.`,
  };
  notify(code, texts[code] || `The session could not be resumed (${code}: ${message.message || 'no details'}).${callEnded} Log in again.`,
    afterReload ? 'warn' : 'error');
}

/** Close code 4000: the session was resumed on another connection (e.g. another tab). */
function onTakenOver(event) {
  const name = session?.username ?? myName;
  resuming = null;
  outbox = [];
  forgetSession();  // the token is spent; the session lives on elsewhere
  log(`signaling closed (code ${event.code}, ${event.reason || 'session resumed on another connection'})`);
  if (pc || peer) endCall({ sendClose: false, notice: null });
  myName = null;
  pendingName = null;
  setBody('user', null);
  setBody('signaling', 'closed');
  setState('logged-out');
  if (name) ui.username.value = name;
  notify('session_taken_over',
    'Your session was resumed on another connection (another tab or window took it over). This page has disconnected; log in again to use it here.',
    'warn', { timeout: 0 });
}

// ---------------------------------------------------------------------------------------------
// Login

function login(name) {
  pendingName = name;
  if (!myName) setState('logging-in');  // a re-login after a reconnect keeps the call panel up
  if (ws && ws.readyState === WebSocket.OPEN) send({ type: 'login', username: name, resumable: true });
  else if (!ws && !reconnectTimer) connect();  // e.g. after a takeover closed this page's connection
  // else: sent when the socket opens
}

async function onLogin(message) {
  const name = pendingName;
  if (message.success) {
    takeIceServers(message);
    myName = name;
    pendingName = null;
    reloginTries = 0;
    if (typeof message.token === 'string') {
      session = { username: myName, token: message.token, graceMs: Number(message.graceMs) || 30_000, lastSeq: 0, peer: null };
      log(`resumable session: survives a drop of the connection for ${session.graceMs} ms`);
    } else {
      session = null;  // a server without sessions: a drop ends the call (today's behaviour)
    }
    saveSession();
    setBody('user', myName);
    ui.localLabel.textContent = `You (${myName})`;
    dismiss('name_taken', 'invalid_username', 'login_failed');
    setState('idle');
    log(`logged in as ${myName}`);
    media ??= startMedia();
    await media;
    return;
  }
  const code = message.code || 'login_failed';
  if (code === 'name_taken' && myName && reloginTries < RELOGIN_RETRIES) {
    // Logging in again after a reconnect: the server may not have noticed the old socket yet.
    reloginTries += 1;
    log(`name ${myName} still taken after reconnect; retry ${reloginTries}/${RELOGIN_RETRIES}`);
    setTimeout(() => { if (myName) login(myName); }, 1000 * reloginTries);
    return;
  }
  myName = null;
  pendingName = null;
  reloginTries = 0;
  setBody('user', null);
  setState('logged-out');
  const texts = {
    name_taken: `The name “${name}” is taken. Pick another one.`,
    invalid_username: `“${name}” is not a valid name: ${message.message || 'use 1 to 64 characters, no control characters'}.`,
    already_logged_in: message.message || 'This connection is already logged in.',
    unauthorized: message.message || 'You may not log in with that name.',
  };
  const fallback = message.message
    ? `Login failed: ${message.message}`
    : `The server refused the name “${name}” (probably taken). Pick another one.`;  // servers without codes
  notify(code, texts[code] || fallback, 'error');
  ui.username.focus();
  ui.username.select();
}

// ---------------------------------------------------------------------------------------------
// Camera and microphone

async function startMedia() {
  setBody('media', 'pending');
  if (!navigator.mediaDevices?.getUserMedia) {
    setBody('media', 'none');
    notify('camera_unavailable',
      'This page cannot use a camera here (it needs https or localhost). You can still receive video, chat and send files.',
      'warn', { timeout: 0 });
    return;
  }
  let firstError = null;
  for (const constraints of [{ video: true, audio: true }, { video: true }, { audio: true }]) {
    try {
      localStream = await navigator.mediaDevices.getUserMedia(constraints);
      break;
    } catch (error) {
      firstError ??= error;
      log(`getUserMedia(${JSON.stringify(constraints)}) failed: ${error.name}: ${error.message}`);
      if (error.name === 'NotAllowedError' || error.name === 'SecurityError') break;
    }
  }
  const hasVideo = !!localStream?.getVideoTracks().length;
  setBody('media', hasVideo ? 'camera' : localStream ? 'audio-only' : 'none');
  showVideo(ui.localVideo, localStream, ui.localVideo.parentElement);
  if (hasVideo) return;
  const reason = firstError?.name === 'NotAllowedError'
    ? 'Camera access was denied'
    : firstError?.name === 'NotFoundError' || firstError?.name === 'OverconstrainedError'
      ? 'No camera was found'
      : `The camera could not be started${firstError ? ` (${firstError.name})` : ''}`;
  const what = localStream ? 'Calls will send your microphone only' : 'Calls will be receive-only';
  ui.localPlaceholder.textContent = localStream ? 'Microphone only' : 'No camera';
  notify('camera_denied', `${reason}. ${what}: you still see the other side, and chat and file transfer work.`,
    'warn', { timeout: 0 });
}

// ---------------------------------------------------------------------------------------------
// The peer connection

function createPeerConnection() {
  let connection;
  try {
    connection = new RTCPeerConnection({ iceServers, iceTransportPolicy: ICE_TRANSPORT_POLICY });
  } catch (error) {
    notify('bad_ice_config', `The server's ICE configuration was rejected (${error.message}); using none.`, 'warn');
    connection = new RTCPeerConnection({ iceServers: [], iceTransportPolicy: ICE_TRANSPORT_POLICY });
  }
  pc = connection;
  window.pc = connection;
  remoteCandidates = [];
  const remoteStream = new MediaStream();

  connection.onicecandidate = ({ candidate }) => {
    if (pc !== connection || !candidate || !peer) return;
    send({ type: 'candidate', candidate: candidate.toJSON(), otherUsername: peer });
  };
  connection.ontrack = ({ track }) => {
    if (pc !== connection) return;
    log(`remote ${track.kind} track`);
    remoteStream.addTrack(track);
    showVideo(ui.remoteVideo, remoteStream, ui.remoteVideo.parentElement);
    track.onunmute = () => ui.remoteVideo.parentElement.classList.toggle('has-video', remoteStream.getVideoTracks().length > 0);
    ui.remoteVideo.play().catch((error) => {
      if (error.name === 'NotAllowedError') {
        notify('autoplay', 'Click the video to start playback (the browser blocked autoplay).', 'warn');
        ui.remoteVideo.addEventListener('click', () => { ui.remoteVideo.play(); dismiss('autoplay'); }, { once: true });
      }
    });
  };
  connection.ondatachannel = ({ channel: dc }) => {
    if (pc === connection) setupChannel(dc);
  };
  connection.onconnectionstatechange = () => {
    if (pc !== connection) return;
    const state = connection.connectionState;
    setBody('connection', state);
    log(`peer connection: ${state}`);
    if (state === 'connected') {
      clearTimeout(iceRestartTimer);
      iceRestartTimer = null;
      dismiss('ice_disconnected');
      ui.callStatus.textContent = `In a call with ${peer} — connected.`;
    } else if (state === 'disconnected') {
      notify('ice_disconnected', `The connection to ${peer} is interrupted; waiting for it to recover…`, 'warn');
    } else if (state === 'failed') {
      onPeerConnectionFailed(connection);
    }
  };
  setBody('connection', connection.connectionState);
  return connection;
}

/**
 * The peer connection itself failed (not the signaling): the page that made the call restarts
 * ICE with a new offer, the other one waits for it. Without recovery the call ends.
 */
function onPeerConnectionFailed(connection) {
  if (iceRestartTimer) return;  // already restarting
  const who = peer;
  if (document.body.dataset.state !== 'in-call') {
    endCall({ sendClose: true, notice: ['ice_failed', `Could not connect to ${who} (the network path failed). The call has ended.`, 'error'] });
    return;
  }
  notify('ice_disconnected', `The connection to ${who} failed; trying to restore it…`, 'warn', { timeout: 0 });
  iceRestartTimer = setTimeout(() => {
    iceRestartTimer = null;
    if (pc === connection && connection.connectionState !== 'connected') {
      endCall({ sendClose: true, notice: ['ice_failed', `Could not reconnect to ${who} (the network path failed). The call has ended.`, 'error'] });
    }
  }, ICE_RESTART_TIMEOUT_MS);
  if (offerer) restartIce().catch((error) => log(`ICE restart failed: ${error.message}`));
}

/** pc.restartIce() and a new offer to the partner, answered there without ringing. */
async function restartIce() {
  const connection = pc;
  if (!connection || !peer) return;
  log('restarting ICE');
  connection.restartIce();
  const offer = await connection.createOffer();
  if (pc !== connection) return;
  await connection.setLocalDescription(offer);
  if (pc !== connection) return;
  send({ type: 'offer', offer: connection.localDescription.toJSON(), otherUsername: peer });
  log(`ICE restart offer sent to ${peer}`);
}

function addLocalMedia(connection, { offering }) {
  const tracks = localStream?.getTracks() ?? [];
  for (const track of tracks) connection.addTrack(track, localStream);
  if (!offering) return;
  // Without a camera or microphone, still ask to receive the other side's.
  for (const kind of ['audio', 'video']) {
    if (!tracks.some((t) => t.kind === kind)) connection.addTransceiver(kind, { direction: 'recvonly' });
  }
}

async function flushCandidates() {
  const queued = remoteCandidates;
  remoteCandidates = [];
  for (const candidate of queued) await addCandidate(candidate);
}

async function addCandidate(candidate) {
  try {
    await pc.addIceCandidate(candidate);
  } catch (error) {
    log(`addIceCandidate failed: ${error.message}`);
  }
}

async function call(name) {
  if (document.body.dataset.state !== 'idle') return;
  if (!name) return;
  if (name === myName) {
    notify('self_addressed', 'That is you. Type the name of someone else who is logged in.', 'warn');
    return;
  }
  dismiss('unknown_user', 'busy', 'self_addressed', 'peer_hung_up', 'in_call');
  peer = name;
  offerer = true;
  setState('calling');
  await media;  // the camera, if any, goes into the offer
  if (peer !== name || pc) return;  // hung up meanwhile
  const connection = createPeerConnection();
  setupChannel(connection.createDataChannel('chat', { ordered: true }));
  addLocalMedia(connection, { offering: true });
  try {
    const offer = await connection.createOffer();
    if (pc !== connection) return;
    await connection.setLocalDescription(offer);
    if (pc !== connection) return;
    send({ type: 'offer', offer: connection.localDescription.toJSON(), otherUsername: name });
    log(`offer sent to ${name}`);
  } catch (error) {
    endCall({ sendClose: false, notice: ['offer_failed', `Could not start the call: ${error.message}`, 'error'] });
    return;
  }
  clearTimeout(answerTimer);
  if (session) return;  // a server with sessions (issue 10) ends an unanswered call itself: no_answer
  answerTimer = setTimeout(() => {
    if (pc === connection && document.body.dataset.state === 'calling') {
      endCall({ sendClose: true, notice: ['no_answer', `No answer from ${name}. The call has ended.`, 'warn'] });
    }
  }, ANSWER_TIMEOUT_MS);
}

async function onOffer(message) {
  const from = message.username;
  if (pc && from && from !== peer) {
    log(`ignored an offer from ${from}: in a call with ${peer}`);
    return;
  }
  if (pc) {
    if (document.body.dataset.state === 'ringing') {
      log(`ignored a second offer from ${from} while ringing`);
      return;
    }
    await answerOffer(message.offer, { renegotiation: true });  // inside the call: no ringing
    return;
  }
  if (!myName) return;
  if (from && from === stalePeer) {
    log(`ignored an offer from ${from} replayed from the call the reload ended`);
    return;
  }
  // A new call rings: the offer is applied now (so that trickled candidates find it), the answer
  // waits for Accept.
  peer = from;
  offerer = false;
  setState('ringing');
  dismiss('peer_hung_up', 'unknown_user', 'busy', 'no_answer', 'declined', 'missed_call', 'redial_too_soon');
  const connection = createPeerConnection();
  try {
    await connection.setRemoteDescription(message.offer);
    if (pc !== connection) return;
    await flushCandidates();
    log(`${from} is calling: ringing`);
  } catch (error) {
    endCall({ sendClose: true, notice: ['answer_failed', `Could not take the call from ${from}: ${error.message}`, 'error'] });
  }
}

/** Accept: answers the ringing call (the offer is already applied). */
async function accept() {
  if (document.body.dataset.state !== 'ringing' || !pc) return;
  const connection = pc;
  setState('answering');
  await media;  // the camera, if any, goes into the answer
  if (pc !== connection) return;
  addLocalMedia(connection, { offering: false });
  await answerOffer(null, { renegotiation: false });
}

/** Decline: tells the caller (a close before answering) and goes back to idle. */
function decline() {
  if (document.body.dataset.state !== 'ringing' || !peer) return;
  const who = peer;
  endCall({ sendClose: true, notice: ['declined', `You declined the call from ${who}.`, 'info'] });
}

/** Answers the current call's offer; `offer` null: it is applied already (an accepted ring). */
async function answerOffer(offer, { renegotiation }) {
  const connection = pc;
  const from = peer;
  try {
    if (offer) {
      await connection.setRemoteDescription(offer);
      if (pc !== connection) return;
      await flushCandidates();
    }
    const answer = await connection.createAnswer();
    if (pc !== connection) return;
    await connection.setLocalDescription(answer);
    if (pc !== connection) return;
    send({ type: 'answer', answer: connection.localDescription.toJSON(), otherUsername: peer });
    log(`answer sent to ${peer}${renegotiation ? ' (renegotiation)' : ''}`);
    setState('in-call');
  } catch (error) {
    endCall({ sendClose: true, notice: ['answer_failed', `Could not answer ${from}: ${error.message}`, 'error'] });
  }
}

async function onAnswer(message) {
  if (!pc || (message.username && message.username !== peer)) {
    log(`ignored an answer from ${message.username ?? '?'}`);
    return;
  }
  if (pc.signalingState !== 'have-local-offer') {
    log(`ignored an answer in signaling state ${pc.signalingState}`);
    return;
  }
  const connection = pc;
  clearTimeout(answerTimer);
  try {
    await connection.setRemoteDescription(message.answer);
    if (pc !== connection) return;
    await flushCandidates();
    setState('in-call');
    log(`${peer} answered`);
  } catch (error) {
    endCall({ sendClose: true, notice: ['answer_failed', `The answer from ${peer} was not usable: ${error.message}`, 'error'] });
  }
}

async function onCandidate(message) {
  if (!pc || (message.username && message.username !== peer) || !message.candidate) return;
  if (!pc.remoteDescription) {
    remoteCandidates.push(message.candidate);  // trickle ICE: the candidate beat the description
    return;
  }
  await addCandidate(message.candidate);
}

function onClose(message) {
  if (!pc || (message.username && message.username !== peer)) return;
  const who = peer;
  const state = document.body.dataset.state;
  let notice;
  if (message.reason === 'no_answer') {
    // The server's ring timeout ended the call; both sides are told.
    notice = state === 'ringing' || state === 'answering'
      ? ['no_answer', `Missed call from ${who}: no answer in time.`, 'warn']
      : ['no_answer', `No answer from ${who}. The call has ended.`, 'warn'];
  } else if (state === 'calling') {
    notice = ['declined', `${who} declined the call.`, 'info'];
  } else if (state === 'ringing') {
    notice = ['missed_call', `${who} hung up before you answered.`, 'info'];
  } else {
    notice = ['peer_hung_up', `${who} hung up.`, 'info'];
  }
  endCall({ sendClose: false, notice });
}

function onError(message) {
  const code = message.code || 'error';
  const calling = document.body.dataset.state === 'calling';
  const target = peer;
  switch (code) {
    case 'unknown_user':
    case 'busy':
    case 'self_addressed':
      if (!calling) {
        log(`late ${code} ignored: ${message.message}`);  // e.g. a candidate racing a hang-up
        return;
      }
      endCall({ sendClose: false, notice: null });
      notify(code, {
        unknown_user: `${target} is not online (no one is logged in with that name).`,
        busy: `${target} is busy in another call. Try again later.`,
        self_addressed: 'You cannot call yourself.',
      }[code], 'warn', { timeout: 0 });
      return;
    case 'not_in_call':
      if (stalePeer) {
        log(`the call with ${stalePeer} from before the reload is over on the server`);
        stalePeer = null;
        return;
      }
      log(`not_in_call (ignored): ${message.message}`);  // a close crossed the partner's close
      return;
    case 'in_call':
      notify(code, `You are already in a call: hang up first. (${message.message})`, 'warn');
      return;
    case 'rate_limited':
      notify(code, `Slow down: the server dropped a message (${message.message}).`, 'warn');
      return;
    case 'recipient_overloaded':
    case 'server_overloaded':
      // The sender pays for its traffic: this message was dropped, nothing else changed.
      notify(code, `The server dropped a message, try again in a moment (${message.message}).`, 'warn');
      return;
    case 'redial_too_soon': {
      // Our offer was refused: the callee declined or did not answer a moment ago.
      if (calling) endCall({ sendClose: false, notice: null });
      const seconds = /retry in (\d+)\s*s/.exec(message.message ?? '')?.[1];
      notify(code, `${target ?? 'They'} did not take your last call. ${seconds ? `You can call again in ${seconds} s.` : `Try again later (${message.message}).`}`,
        'warn', { timeout: 0 });
      return;
    }
    case 'unanswered_limit':
      log(`unanswered_limit (dropped before the answer): ${message.message}`);
      return;
    default:
      notify(code, `Server error (${code}): ${message.message || 'no details'}`, 'error');
  }
}

/** Ends the current call locally; tells the partner when sendClose. */
function endCall({ sendClose, notice }) {
  const who = peer;
  if (sendClose && who) send({ type: 'close', otherUsername: who });
  clearTimeout(answerTimer);
  clearTimeout(iceRestartTimer);
  iceRestartTimer = null;
  if (channel) {
    channel.onopen = channel.onclose = channel.onmessage = null;
    try { channel.close(); } catch { /* already closed */ }
    channel = null;
  }
  if (pc) {
    pc.onicecandidate = pc.ontrack = pc.ondatachannel = pc.onconnectionstatechange = null;
    pc.close();
    pc = null;
  }
  window.pc = null;
  remoteCandidates = [];
  incoming = null;
  peer = null;
  showVideo(ui.remoteVideo, null, ui.remoteVideo.parentElement);
  ui.remotePlaceholder.textContent = 'No call';
  setChannelUi(false);
  setBody('connection', 'none');
  dismiss('ice_disconnected', 'incoming_call', 'autoplay');
  if (who && connectedOnce) systemLine(`Call with ${who} ended`);
  connectedOnce = false;
  setState(myName ? 'idle' : 'logged-out');
  if (notice) notify(...notice);
}

function hangUp() {
  if (!peer) return;
  const who = peer;
  endCall({ sendClose: !!pc, notice: ['hung_up', `You hung up on ${who}.`, 'info'] });
}

// ---------------------------------------------------------------------------------------------
// Data channel: chat and file transfer

function setupChannel(dc) {
  channel = dc;
  dc.binaryType = 'arraybuffer';
  dc.bufferedAmountLowThreshold = BUFFER_LOW;
  dc.onopen = () => {
    if (channel !== dc) return;
    log('data channel open');
    connectedOnce = true;
    setChannelUi(true);
    systemLine(`Connected to ${peer}`);
  };
  dc.onclose = () => {
    if (channel !== dc) return;
    log('data channel closed');
    setChannelUi(false);
  };
  dc.onmessage = ({ data }) => {
    if (channel !== dc) return;
    if (typeof data === 'string') onChannelText(data);
    else onChunk(data);
  };
}

function onChannelText(text) {
  let message;
  try {
    message = JSON.parse(text);
  } catch {
    return;
  }
  if (message.t === 'chat' && typeof message.text === 'string') {
    chatLine(peer, message.text, false);
  } else if (message.t === 'file') {
    incoming = { name: String(message.name || 'file'), size: Number(message.size) || 0, mime: String(message.mime || ''), chunks: [], received: 0 };
    showProgress(`Receiving ${incoming.name}`, 0, incoming.size);
  } else if (message.t === 'file-end' && incoming) {
    const file = incoming;
    incoming = null;
    if (file.received !== file.size) {
      notify('file_incomplete', `${file.name} arrived incomplete (${file.received} of ${file.size} bytes).`, 'error');
      return;
    }
    const blob = new Blob(file.chunks, { type: file.mime || 'application/octet-stream' });
    addFileRow(file.name, blob.size, 'received', URL.createObjectURL(blob));
    showProgress(`Received ${file.name}`, file.size, file.size);
  }
}

function onChunk(buffer) {
  if (!incoming) return;
  incoming.chunks.push(buffer);
  incoming.received += buffer.byteLength;
  showProgress(`Receiving ${incoming.name}`, incoming.received, incoming.size);
}

function sendChat(text) {
  if (!channel || channel.readyState !== 'open' || !text) return;
  channel.send(JSON.stringify({ t: 'chat', text }));
  chatLine(myName, text, true);
}

function waitForLowBuffer(dc) {
  return new Promise((resolve) => {
    const done = () => {
      dc.removeEventListener('bufferedamountlow', done);
      dc.removeEventListener('close', done);
      resolve();
    };
    dc.addEventListener('bufferedamountlow', done);
    dc.addEventListener('close', done);
  });
}

async function sendFile(file) {
  const dc = channel;
  if (!dc || dc.readyState !== 'open' || sending) return;
  sending = true;
  setChannelUi(true);
  try {
    dc.send(JSON.stringify({ t: 'file', name: file.name, size: file.size, mime: file.type }));
    let sent = 0;
    showProgress(`Sending ${file.name}`, 0, file.size);
    for (let offset = 0; offset < file.size; offset += READ_SIZE) {
      const block = await file.slice(offset, offset + READ_SIZE).arrayBuffer();
      for (let at = 0; at < block.byteLength; at += CHUNK_SIZE) {
        if (dc.readyState !== 'open') throw new Error('the data channel closed');
        if (dc.bufferedAmount > BUFFER_HIGH) await waitForLowBuffer(dc);
        if (dc.readyState !== 'open') throw new Error('the data channel closed');
        const chunk = block.slice(at, at + CHUNK_SIZE);
        dc.send(chunk);
        sent += chunk.byteLength;
        showProgress(`Sending ${file.name}`, sent, file.size);
      }
    }
    dc.send(JSON.stringify({ t: 'file-end' }));
    showProgress(`Sent ${file.name}`, file.size, file.size);
    addFileRow(file.name, file.size, 'sent', null);
  } catch (error) {
    notify('file_failed', `Sending ${file.name} failed: ${error.message}`, 'error');
  } finally {
    sending = false;
    setChannelUi(channel === dc && dc.readyState === 'open');
  }
}

function showProgress(label, done, total) {
  ui.progress.max = Math.max(total, 1);
  ui.progress.value = total ? done : 1;
  const percent = total ? Math.floor((done / total) * 100) : 100;
  ui.progressLabel.textContent = `${label} · ${percent}%`;
  ui.progress.dataset.percent = String(percent);
}

function addFileRow(name, size, direction, url) {
  const li = document.createElement('li');
  li.dataset.direction = direction;
  li.dataset.size = String(size);
  let nameEl;
  if (url) {
    nameEl = document.createElement('a');
    nameEl.href = url;
    nameEl.download = name;
  } else {
    nameEl = document.createElement('span');
  }
  nameEl.className = 'name';
  nameEl.textContent = name;
  const meta = document.createElement('span');
  meta.className = 'meta';
  meta.textContent = `${formatBytes(size)} · ${direction}`;
  li.append(nameEl, meta);
  ui.files.prepend(li);
}

function chatLine(from, text, mine) {
  const li = document.createElement('li');
  li.className = mine ? 'me' : 'peer';
  li.dataset.from = from ?? '';
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = mine ? 'you' : from;
  const body = document.createElement('span');
  body.className = 'text';
  body.textContent = text;
  li.append(who, body);
  ui.chatLog.append(li);
  ui.chatLog.scrollTop = ui.chatLog.scrollHeight;
}

function systemLine(text) {
  const li = document.createElement('li');
  li.className = 'system';
  li.textContent = text;
  ui.chatLog.append(li);
  ui.chatLog.scrollTop = ui.chatLog.scrollHeight;
}

// ---------------------------------------------------------------------------------------------
// Wiring

function handleMessage(message) {
  switch (message.type) {
    case 'login': return onLogin(message);
    case 'resume': return onResume(message);
    case 'offer': return onOffer(message);
    case 'answer': return onAnswer(message);
    case 'candidate': return onCandidate(message);
    case 'close': return onClose(message);
    case 'error': return onError(message);
    default: log(`ignored message type ${JSON.stringify(message.type)}`);
  }
  return undefined;
}

ui.loginForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const name = ui.username.value.trim();
  if (!name) {
    notify('invalid_username', 'Type a name first.', 'warn');
    return;
  }
  dismiss('name_taken', 'invalid_username', 'login_failed');
  login(name);
});

ui.callForm.addEventListener('submit', (event) => {
  event.preventDefault();
  call(ui.callee.value.trim());
});

ui.hangupBtn.addEventListener('click', hangUp);
// Accept and Decline go through the inbox, in order with the server's messages about the call.
ui.acceptBtn.addEventListener('click', () => { inbox = inbox.then(accept).catch((error) => log(`accept: ${error.message}`)); });
ui.declineBtn.addEventListener('click', () => { inbox = inbox.then(decline).catch((error) => log(`decline: ${error.message}`)); });

ui.chatForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const text = ui.chatInput.value;
  if (!text.trim()) return;
  sendChat(text);
  ui.chatInput.value = '';
});

ui.fileForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const file = ui.fileInput.files?.[0];
  if (!file) {
    notify('no_file', 'Choose a file first.', 'warn');
    return;
  }
  sendFile(file).then(() => { ui.fileInput.value = ''; });
});

window.addEventListener('pagehide', () => {
  unloading = true;
  if (resuming && session) {
    // Leaving while the connection is down: a reload of this tab picks the resume up.
    session.resumeDeadline = resuming.deadline;
    saveSession();
  } else if (ws && ws.readyState === WebSocket.OPEN) {
    // A deliberate goodbye: the server ends the session at once and tells the partner.
    ws.close(1000, 'page closed');
    forgetSession();
  }
});
// Back from the back/forward cache, the connection is gone: start afresh.
window.addEventListener('pageshow', (event) => { if (event.persisted) location.reload(); });

window.demo = { restartIce };  // for tests: renegotiates the running call
window.pc = null;
setState('logged-out');
setChannelUi(false);
await loadConfig();
// A session this tab still holds (it was reloaded while reconnecting, or crashed): take it back.
session = loadSession();
if (session && (session.resumeDeadline ?? Infinity) > Date.now()) {
  resuming = { deadline: session.resumeDeadline ?? Date.now() + session.graceMs, attempt: 0, afterReload: true, lostPeer: session.peer };
  pendingName = session.username;
  ui.username.value = session.username;
  setState('logging-in');
  log(`resuming the session of ${session.username} from before the reload`);
} else if (session) {
  forgetSession();
}
connect();
