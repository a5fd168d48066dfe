// The composer: its character counter, posting over the socket (or HTTP while it is down), and post errors.
import { api, ApiError, roomPath } from './api.js';
import { $, showText } from './dom.js';
import { addPostedMessage } from './message-list.js';
import { isOwnMessage, roomName, session } from './room-session.js';

const ACK_TIMEOUT = 10000;
const PLACEHOLDERS = {
  open: 'Write a message…',
  paused: 'Posting is paused',
  closed: 'The room is closed',
};

const el = {
  form: $('composer'),
  body: $('body'),
  send: $('send'),
  counter: $('counter'),
  postError: $('post-error'),
};

const pending = new Map(); // ref -> {body, timer}: socket posts waiting for their ack
let lostBody = null; // a post whose ack never came (socket dropped): cleared if it shows up
let sendingHttp = false;
let cooldownUntil = 0;
let cooldownTimer = null;
let refCounter = 0;
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

export function updateComposer() {
  const count = codePoints(el.body.value);
  const max = maxLength();
  el.counter.textContent = `${count} / ${max}`;
  // Warn in the last tenth (at most the last 20 characters) before the limit.
  const near = count > 0 && max - count < Math.max(1, Math.min(20, Math.ceil(max / 10)));
  el.counter.dataset.level = count > max ? 'over' : near ? 'warn' : 'ok';
  el.body.setAttribute('aria-invalid', count > max ? 'true' : 'false');
  const roomState = session.room ? session.room.state : 'open';
  el.body.disabled = !session.me || roomState !== 'open' || session.stopped;
  el.body.placeholder = PLACEHOLDERS[roomState] || PLACEHOLDERS.open;
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

function settlePending(ref, errorFrame) {
  const entry = pending.get(ref);
  if (!entry) return;
  clearTimeout(entry.timer);
  pending.delete(ref);
  if (errorFrame) {
    showPostError(errorFrame.code, errorFrame.message, errorFrame.retry_after ?? null);
  } else {
    if (el.body.value.trim() === entry.body) {
      el.body.value = '';
      autosize();
    }
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
    if (frame.code === 'unauthorized') sessionExpired();
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

function showPostError(code, message, retryAfter) {
  const seconds = Math.ceil(Number(retryAfter));
  if (code === 'rate_limited' && seconds > 0) {
    setPostError('', code);
    startCooldown(seconds);
  } else if (code === 'muted') {
    setPostError('The room’s owner has muted you: you can read along, but you cannot post.', code);
  } else if (code === 'rate_limited') {
    setPostError(`Slow down: ${message}`, code);
  } else {
    setPostError(message || 'Your message could not be posted.', code);
  }
  if (code === 'unauthorized') sessionExpired();
  updateComposer();
}

async function post() {
  const body = el.body.value.trim();
  const count = codePoints(body);
  if (!session.me || count === 0 || count > maxLength() || el.send.disabled) return;
  setPostError('');
  lostBody = null;
  const live = liveSocket();
  if (live && live.isOpen) {
    const ref = newRef();
    const timer = setTimeout(() => {
      if (!pending.has(ref)) return;
      pending.delete(ref);
      lostBody = body;
      setPostError('The server has not confirmed your message yet. It may still arrive.');
      updateComposer();
    }, ACK_TIMEOUT);
    pending.set(ref, { body, timer });
    live.send({ type: 'post', body, ref });
    updateComposer();
    return;
  }
  sendingHttp = true;
  updateComposer();
  try {
    const message = await api('POST', `${roomPath(roomName)}/messages`, { body: { body }, token: session.me.token });
    addPostedMessage(message);
    if (el.body.value.trim() === body) {
      el.body.value = '';
      autosize();
    }
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      sessionExpired();
    } else if (err instanceof ApiError) {
      showPostError(err.code, err.message, err.retryAfter);
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
  el.body.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      if (!el.send.disabled) post();
    }
  });
}
