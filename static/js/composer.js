// The composer: its character counter, posting over the socket (or HTTP while it is down), and post errors.
// A participant may ask a question (when the room has questions on); the owner posts as the host.
import { api, ApiError, roomPath } from './api.js';
import { $, showText } from './dom.js';
import { addPostedMessage } from './message-list.js';
import { addPending } from './pending.js';
import { isOwnMessage, roomName, session } from './room-session.js';

const ACK_TIMEOUT = 10000;
const PLACEHOLDERS = {
  open: 'Write a message…',
  paused: 'Posting is paused',
  closed: 'The room is closed',
  locked: 'Only the host can post now',
  host: 'Write as the host…',
};

const el = {
  form: $('composer'),
  body: $('body'),
  send: $('send'),
  counter: $('counter'),
  postError: $('post-error'),
  ask: $('ask-question'),
  askLabel: $('ask-label'),
  who: $('posting-as'),
  postAsLabel: $('post-as-label'),
  postAs: $('post-as'),
  leave: $('leave'),
};

const pending = new Map(); // ref -> {body, timer}: socket posts waiting for their ack
let lostBody = null; // a post whose ack never came (socket dropped): cleared if it shows up
let sendingHttp = false;
let cooldownUntil = 0;
let cooldownTimer = null;
let refCounter = 0;
let chosenPostAs = null; // 'host' or 'me', once the owner picked one
let liveSocket = () => null;
let sessionExpired = () => {};

function newRef() {
  refCounter += 1;
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}-${refCounter}`;
}

function codePoints(text) {
  return [...text.trim()].length;
}

function maxLength() {
  const max = session.room && Number(session.room.max_length);
  return max > 0 ? max : 280;
}

// Whether the next post goes out as the host: the owner's, unless they chose their nickname.
function postingAsHost() {
  return session.owner !== null && (session.me === null || el.postAs.value === 'host');
}

// Who the composer posts as: the owner picks between the host and their nickname, if they joined.
function updateWho() {
  const host = session.room && session.room.host_name ? session.room.host_name : 'Host';
  const options = [['host', `${host} (host)`]];
  if (session.me) options.unshift(['me', session.me.nickname]);
  if (el.postAs.options.length !== options.length
      || options.some(([value, text], i) => el.postAs.options[i].value !== value || el.postAs.options[i].text !== text)) {
    el.postAs.replaceChildren(...options.map(([value, text]) => new Option(text, value)));
    // As the owner chose, else under the nickname they joined with.
    if (options.some(([value]) => value === chosenPostAs)) el.postAs.value = chosenPostAs;
  }
  el.postAsLabel.hidden = !session.owner;
  el.who.hidden = Boolean(session.owner);
  el.leave.hidden = !session.me;
}

export function updateComposer() {
  updateWho();
  const count = codePoints(el.body.value);
  const max = maxLength();
  el.counter.textContent = `${count} / ${max}`;
  // Warn in the last tenth (at most the last 20 characters) before the limit.
  const near = count > 0 && max - count < Math.max(1, Math.min(20, Math.ceil(max / 10)));
  el.counter.dataset.level = count > max ? 'over' : near ? 'warn' : 'ok';
  el.body.setAttribute('aria-invalid', count > max ? 'true' : 'false');
  const roomState = session.room ? session.room.state : 'open';
  const locked = Boolean(session.room && session.room.locked);
  const host = postingAsHost();
  const allowed = host ? roomState !== 'closed' : roomState === 'open' && !locked;
  el.body.disabled = !(session.me || session.owner) || !allowed || session.stopped;
  if (host && allowed) el.body.placeholder = PLACEHOLDERS.host;
  else if (roomState === 'open' && locked) el.body.placeholder = PLACEHOLDERS.locked;
  else el.body.placeholder = PLACEHOLDERS[roomState] || PLACEHOLDERS.open;
  el.askLabel.hidden = !(session.room && session.room.qa);
  el.send.disabled = el.body.disabled || count === 0 || count > max || sendingHttp
    || pending.size > 0 || Date.now() < cooldownUntil;
}

function autosize() {
  el.body.style.height = 'auto';
  el.body.style.height = Math.min(el.body.scrollHeight + 2, 200) + 'px';
}

// Shows a post error; `code` is the server's error code, if it gave one.
function setPostError(text, code = '') {
  el.postError.dataset.code = code;
  showText(el.postError, text);
}

export function clearPostError() {
  setPostError('');
}

export function focusComposer() {
  el.body.focus();
}

// The draft went through (posted or held): empty the composer if it still holds that text.
function clearDraft(body) {
  if (el.body.value.trim() === body) {
    el.body.value = '';
    el.ask.checked = false;
    autosize();
  }
}

function settlePending(ref, errorFrame) {
  const entry = pending.get(ref);
  if (!entry) return;
  clearTimeout(entry.timer);
  pending.delete(ref);
  if (errorFrame) {
    showPostError(errorFrame.code, errorFrame.message, errorFrame.retry_after ?? null, entry.host);
  } else {
    clearDraft(entry.body);
    setPostError('');
  }
  updateComposer();
}

// The server's ack for the socket post `ref`.
export function acknowledge(ref) {
  settlePending(ref, null);
}

// An error frame: the answer to one of our posts, or else a complaint about the connection.
export function showServerError(frame) {
  if (frame.ref && pending.has(frame.ref)) {
    settlePending(frame.ref, frame);
    return;
  }
  const live = liveSocket();
  if (live && live.isOpen) {
    // (Before the welcome, an error explains the close that follows: the page's onClose handles it.)
    setPostError(frame.message || 'The server reported an error.');
    if (frame.code === 'unauthorized' && !session.owner) sessionExpired();
  }
}

// Pending socket posts can no longer be confirmed (socket closed or replaced).
export function failPending(message) {
  if (pending.size === 0) return;
  for (const entry of pending.values()) {
    clearTimeout(entry.timer);
    lostBody = entry.body;
  }
  pending.clear();
  if (message) setPostError(message);
  updateComposer();
}

// A new live message: if it is our post whose ack got lost, that post did go through.
export function noteLiveMessage(message) {
  if (lostBody === null || !isOwnMessage(message) || message.body !== lostBody) return;
  if (el.body.value.trim() === lostBody) el.body.value = '';
  lostBody = null;
  setPostError('');
  updateComposer();
}

// After a rate_limited answer Send stays off, and the error counts down the seconds left.
function startCooldown(seconds) {
  cooldownUntil = Date.now() + seconds * 1000;
  clearInterval(cooldownTimer);
  const tick = () => {
    const left = Math.ceil((cooldownUntil - Date.now()) / 1000);
    const showing = el.postError.dataset.code === 'rate_limited';
    if (left > 0) {
      if (showing) showText(el.postError, `Slow down: try again in ${left} s.`);
      return;
    }
    clearInterval(cooldownTimer);
    if (showing) setPostError('');
    updateComposer();
  };
  tick();
  cooldownTimer = setInterval(tick, 1000);
}

// `host`: the post was the owner's, as the host (a refusal then says nothing about our nickname).
function showPostError(code, message, retryAfter, host = false) {
  const seconds = Math.ceil(Number(retryAfter));
  if (code === 'rate_limited' && seconds > 0) {
    setPostError('', code);
    startCooldown(seconds);
  } else if (code === 'room_locked') {
    setPostError('The owner has locked the room: only the host can post now.', code);
  } else if (code === 'muted') {
    setPostError('The room’s owner has muted you: you can read along, but you cannot post.', code);
  } else if (code === 'rate_limited') {
    setPostError(`Slow down: ${message}`, code);
  } else {
    setPostError(message || 'Your message could not be posted.', code);
  }
  if (code === 'unauthorized' && !host) sessionExpired();
  updateComposer();
}

async function post() {
  const body = el.body.value.trim();
  const count = codePoints(body);
  if (!(session.me || session.owner) || count === 0 || count > maxLength() || el.send.disabled) return;
  setPostError('');
  lostBody = null;
  const host = postingAsHost();
  const question = Boolean(session.room && session.room.qa) && el.ask.checked;
  // What the post says besides its body: a question, a host post.
  const flags = { ...(question ? { question } : {}), ...(host ? { host } : {}) };
  const live = liveSocket();
  // The owner's socket posts as the host, a participant's as that participant.
  if (live && live.isOpen && host === (session.owner !== null)) {
    const ref = newRef();
    const timer = setTimeout(() => {
      if (!pending.has(ref)) return;
      pending.delete(ref);
      lostBody = body;
      setPostError('The server has not confirmed your message yet. It may still arrive.');
      updateComposer();
    }, ACK_TIMEOUT);
    pending.set(ref, { body, timer, host });
    live.send({ type: 'post', body, ref, ...flags });
    updateComposer();
    return;
  }
  sendingHttp = true;
  updateComposer();
  try {
    const result = await api('POST', `${roomPath(roomName)}/messages`, {
      body: { body, ...flags },
      token: host ? session.owner.token : session.me.token,
    });
    if (result && result.held) addPending(result.held);
    else addPostedMessage(result);
    clearDraft(body);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401 && !host) {
      sessionExpired();
    } else if (err instanceof ApiError) {
      showPostError(err.code, err.message, err.retryAfter, host);
    } else {
      setPostError('Your message could not be posted.');
    }
  } finally {
    sendingHttp = false;
    updateComposer();
  }
}

// socket(): the live connection (or null) to post over.
// onSessionExpired(): the server no longer accepts our participant token.
export function setupComposer({ socket, onSessionExpired }) {
  liveSocket = socket;
  sessionExpired = onSessionExpired;
  el.form.addEventListener('submit', (event) => {
    event.preventDefault();
    post();
  });
  el.body.addEventListener('input', () => {
    autosize();
    updateComposer();
    if (el.postError.dataset.code !== 'rate_limited') setPostError('');
  });
  el.postAs.addEventListener('change', () => {
    chosenPostAs = el.postAs.value;
    updateComposer();
  });
  el.body.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      if (!el.send.disabled) post();
    }
  });
}
