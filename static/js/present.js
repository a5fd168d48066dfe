// The projector view at /NAME/present: a read-only live view of a room for the big screen. It
// shows the newest messages or the top questions, the question being discussed, and how to join
// (the room's link and its QR code). It never posts; it follows the room over the same live
// connection as the chat page, with a token only where a password room needs one.
import { api, ApiError, NAME_RE, ownerKey, participantKey, roomPath, store } from './api.js';
import { $, showText } from './dom.js';
import { LiveConnection, roomLiveUrl, roomRefusal } from './live.js';
import { appendLinkified } from './render.js';

const NEWEST_SHOWN = 40;
const TOP_SHOWN = 12;
const VIEWS = ['newest', 'top'];
const STATE_LABELS = { connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…', offline: 'Offline' };

const roomName = decodeURIComponent(location.pathname.split('/').filter(Boolean)[0] || '').toLowerCase();

const el = {
  title: $('present-title'),
  conn: $('conn-state'),
  online: $('online'),
  list: $('present-list'),
  empty: $('present-empty'),
  notice: $('room-notice'),
  pinned: $('pinned'),
  pinnedBody: $('pinned-body'),
  pinnedMeta: $('pinned-meta'),
  qr: $('qr'),
  joinLink: $('join-link'),
  viewButtons: document.querySelectorAll('.present-controls [data-view]'),
  newestButton: $('view-newest'),
  topButton: $('view-top'),
  fullscreen: $('fullscreen'),
};

const messages = new Map(); // seq -> Message, as last sent or updated
let room = null; // the room as last described
let highestSeq = 0; // the resume point
let welcomed = false; // since the page (or the room) started
let chosenView = VIEWS.includes(new URLSearchParams(location.search).get('view'))
  ? new URLSearchParams(location.search).get('view') : null; // null: the room decides
let drawQueued = false;

// A token to read a password room with: this browser's participant token, else the owner's.
function readToken() {
  if (!room || !room.has_password) return null;
  const me = store.get(participantKey(roomName));
  if (me && typeof me.token === 'string' && me.token) return me.token;
  return store.getString(ownerKey(roomName));
}

function qaOn() {
  return Boolean(room && room.qa);
}

function currentView() {
  if (chosenView === 'top' && qaOn()) return 'top';
  if (chosenView === 'newest') return 'newest';
  return qaOn() ? 'top' : 'newest';
}

function votesText(count) {
  return count === 1 ? '1 vote' : `${count} votes`;
}

function voteCount(message) {
  return Number.isInteger(message.votes) ? message.votes : 0;
}

function span(className, text) {
  const node = document.createElement('span');
  node.className = className;
  node.textContent = text;
  return node;
}

// One message or question as a list item; every server string goes in as text.
function item(message, { showVotes }) {
  const li = document.createElement('li');
  li.className = 'present-item kind-' + (message.kind || 'chat');
  li.dataset.seq = String(message.seq);
  if (message.question) li.classList.add('question');
  if (message.pinned) li.classList.add('pinned-item');
  if (message.answered) li.classList.add('answered');
  if (message.host) li.classList.add('host');
  if (showVotes) {
    const votes = voteCount(message);
    const badge = span('votes', String(votes));
    badge.title = votesText(votes);
    badge.setAttribute('aria-label', votesText(votes));
    li.appendChild(badge);
  }
  const text = document.createElement('div');
  text.className = 'present-text';
  const body = document.createElement('p');
  body.className = 'body';
  appendLinkified(body, typeof message.body === 'string' ? message.body : '');
  text.appendChild(body);
  const meta = document.createElement('p');
  meta.className = 'meta';
  meta.appendChild(span('author', typeof message.author === 'string' ? message.author : ''));
  if (message.host) meta.appendChild(span('tag tag-host', 'host'));
  if (message.question && !showVotes) meta.appendChild(span('tag tag-question', 'question'));
  if (message.answered) meta.appendChild(span('tag tag-answered', 'answered'));
  text.appendChild(meta);
  li.appendChild(text);
  return li;
}

function newest() {
  return [...messages.values()].sort((a, b) => a.seq - b.seq).slice(-NEWEST_SHOWN);
}

// Open questions, most votes first; among equals, the earlier one first.
function topQuestions() {
  return [...messages.values()]
    .filter((m) => m.question && !m.answered)
    .sort((a, b) => voteCount(b) - voteCount(a) || a.seq - b.seq)
    .slice(0, TOP_SHOWN);
}

function pinnedMessage() {
  const seq = room ? room.pinned : null;
  return Number.isInteger(seq) ? messages.get(seq) || null : null;
}

function drawPinned() {
  const pin = pinnedMessage();
  el.pinned.hidden = !pin;
  if (!pin) return;
  el.pinnedBody.replaceChildren();
  appendLinkified(el.pinnedBody, typeof pin.body === 'string' ? pin.body : '');
  const author = typeof pin.author === 'string' ? pin.author : '';
  el.pinnedMeta.textContent = pin.question ? `${author} · ${votesText(voteCount(pin))}` : author;
}

function draw() {
  drawQueued = false;
  const view = currentView();
  document.body.dataset.view = view;
  el.topButton.hidden = !qaOn();
  el.newestButton.hidden = !qaOn();
  for (const button of el.viewButtons) button.setAttribute('aria-pressed', String(button.dataset.view === view));
  const shown = view === 'top' ? topQuestions() : newest();
  el.list.replaceChildren(...shown.map((m) => item(m, { showVotes: view === 'top' })));
  el.list.setAttribute('aria-label', view === 'top' ? 'Top questions' : 'Newest messages');
  showText(el.empty, shown.length ? '' : (view === 'top' ? 'No questions yet.' : 'No messages yet.'));
  drawPinned();
}

// Draws at most once a frame, however many frames arrive.
function redraw() {
  if (drawQueued) return;
  drawQueued = true;
  requestAnimationFrame(draw);
}

const STATE_NOTICES = {
  paused: 'The room is paused.',
  closed: 'The room is closed.',
};

// Every question (the live backlog brings only the latest messages) and the pinned message.
async function loadQuestions() {
  if (!qaOn()) return;
  try {
    const page = await api('GET', `${roomPath(roomName)}/questions?order=top&limit=1000`, { token: readToken() });
    for (const q of (page && page.questions) || []) {
      if (typeof q.seq === 'number' && !messages.has(q.seq)) messages.set(q.seq, q);
    }
    redraw();
  } catch {
    // The live backlog still brings the recent ones.
  }
}

async function loadPinned() {
  const seq = room ? room.pinned : null;
  if (!Number.isInteger(seq) || messages.has(seq)) return;
  try {
    const page = await api('GET', `${roomPath(roomName)}/messages?after=${seq - 1}&limit=1`, { token: readToken() });
    const found = ((page && page.messages) || []).find((m) => m.seq === seq);
    if (found && !messages.has(seq)) messages.set(seq, found);
    redraw();
  } catch {
    // No banner until the next room frame.
  }
}

function applyRoom(next) {
  if (!next || typeof next !== 'object') return;
  const hadQa = qaOn();
  room = { ...(room || {}), ...next };
  if (!hadQa && qaOn() && welcomed) loadQuestions();
  loadPinned();
  const title = room.title || room.name || roomName;
  el.title.textContent = title;
  document.title = `${title} · projector · tmd`;
  if (typeof room.online === 'number') el.online.textContent = String(room.online);
  showText(el.notice, STATE_NOTICES[room.state] || '');
  redraw();
}

// Forget everything shown: the room was made anew under this name.
function startOver() {
  messages.clear();
  highestSeq = 0;
  welcomed = false;
}

function onFrame(frame) {
  switch (frame.type) {
    case 'welcome':
      if (frame.new_room) startOver();
      applyRoom(frame.room);
      if (!welcomed) loadQuestions();
      welcomed = true;
      break;
    case 'message': {
      const message = frame.message || {};
      if (typeof message.seq !== 'number') break;
      highestSeq = Math.max(highestSeq, message.seq);
      messages.set(message.seq, message);
      redraw();
      break;
    }
    case 'updated': {
      const message = frame.message || {};
      if (typeof message.seq !== 'number' || !messages.has(message.seq)) break;
      messages.set(message.seq, { ...messages.get(message.seq), ...message });
      redraw();
      break;
    }
    case 'deleted':
      if (messages.delete(frame.seq)) redraw();
      break;
    case 'room':
      applyRoom(frame.room);
      break;
    case 'presence':
      if (typeof frame.online === 'number') el.online.textContent = String(frame.online);
      break;
    default:
      break;
  }
}

function liveUrl(transport) {
  return roomLiveUrl(roomName, transport, {
    since: highestSeq > 0 ? highestSeq : null, roomId: room && room.id, token: readToken(),
  });
}

function onClose(code) {
  if (code === 4404) {
    startOver();
    redraw();
    showText(el.notice, 'This room was deleted by its owner.');
    return 'stop';
  }
  if (code === 1008) {
    showText(el.notice, room && room.has_password
      ? 'This room has a password: join it on this device first, then open the projector view again.'
      : 'The server refused the live connection. Reload to try again.');
    return 'stop';
  }
  return 'retry';
}

// The QR code, inline (crisp at any size); its <title> is "Join at URL", the link shown beside it.
async function showJoin() {
  let url = `${location.origin}/${roomName}`;
  try {
    const response = await fetch(`${roomPath(roomName)}/qr.svg`);
    if (!response.ok) throw new Error(String(response.status));
    const svg = new DOMParser().parseFromString(await response.text(), 'image/svg+xml').documentElement;
    if (svg.localName !== 'svg') throw new Error('not an SVG');
    const title = svg.querySelector('title');
    const said = title ? title.textContent.replace(/^Join at /, '') : '';
    if (/^https?:\/\//.test(said)) url = said;
    svg.setAttribute('aria-hidden', 'true');
    el.qr.replaceChildren(document.importNode(svg, true));
  } catch {
    el.qr.hidden = true;
  }
  el.qr.setAttribute('aria-label', `QR code of ${url}`);
  const a = document.createElement('a');
  a.href = url;
  a.textContent = url.replace(/^https?:\/\//, '');
  el.joinLink.replaceChildren(a);
}

function setupControls() {
  for (const button of el.viewButtons) {
    button.addEventListener('click', () => {
      chosenView = button.dataset.view;
      const url = new URL(location.href);
      url.searchParams.set('view', chosenView);
      history.replaceState(null, '', url);
      redraw();
    });
  }
  if (document.fullscreenEnabled) {
    el.fullscreen.hidden = false;
    el.fullscreen.addEventListener('click', () => document.documentElement.requestFullscreen());
    document.addEventListener('fullscreenchange', () => {
      el.fullscreen.hidden = document.fullscreenElement !== null;
    });
  }
}

function setConnState(state) {
  el.conn.dataset.state = state;
  el.conn.textContent = STATE_LABELS[state] || state;
}

async function main() {
  if (!NAME_RE.test(roomName)) {
    el.title.textContent = 'No such room';
    showText(el.notice, `There is no room called /${roomName}.`);
    setConnState('offline');
    return;
  }
  setupControls();
  showJoin();
  try {
    applyRoom(await api('GET', roomPath(roomName)));
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      el.title.textContent = 'No such room';
      showText(el.notice, `There is no room called /${roomName}. It may have expired or been deleted.`);
      setConnState('offline');
      return;
    }
    showText(el.notice, `Could not load the room: ${err.message}`);
  }
  new LiveConnection({
    url: liveUrl, onFrame, onClose, refusal: roomRefusal(roomName), onState: setConnState,
  }).start();
}

main();
