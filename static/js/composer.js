// The composer: its character counter, posting over the socket (or HTTP while it is down), and post errors.
import { api, ApiError, roomPath } from './api.js';
import { $, showText } from './dom.js';
import { addPostedMessage } from './message-list.js';
import { isOwnMessage, roomName, session } from './room-session.js';

const ACK_TIMEOUT = 10000;

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
  const roomOpen = !session.room || session.room.state === 'open';
  el.body.disabled = !session.me || !roomOpen || session.stopped;
  el.body.placeholder = roomOpen ? 'Write a message…' : 'Posting is off in this room';
  el.send.disabled = el.body.disabled || count === 0 || count > max || sendingHttp
    || pending.size > 0 || Date.now() < cooldownUntil;
}

function autosize() {
  el.body.style.height = 'auto';
  el.body.style.height = Math.min(el.body.scrollHeight + 2, 200) + 'px';
}

export function clearPostError() {
  showText(el.postError, '');
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
    showText(el.postError, '');
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
    showText(el.postError, frame.message || 'The server reported an error.');
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
  if (message) showText(el.postError, message);
  updateComposer();
}

// A new live message: if it is our post whose ack got lost, that post did go through.
export function noteLiveMessage(message) {
  if (lostBody === null || !isOwnMessage(message) || message.body !== lostBody) return;
  if (el.body.value.trim() === lostBody) el.body.value = '';
  lostBody = null;
  showText(el.postError, '');
  updateComposer();
}

function startCooldown(seconds) {
  cooldownUntil = Date.now() + seconds * 1000;
  clearTimeout(cooldownTimer);
  cooldownTimer = setTimeout(() => {
    updateComposer();
    if (el.postError.dataset.code === 'rate_limited') showText(el.postError, '');
  }, seconds * 1000 + 50);
}

function showPostError(code, message, retryAfter) {
  el.postError.dataset.code = code || '';
  if (code === 'rate_limited') {
    const seconds = Number(retryAfter) > 0 ? Math.ceil(Number(retryAfter)) : null;
    showText(el.postError, seconds ? `Slow down: you can post again in ${seconds} s.` : `Slow down: ${message}`);
    if (seconds) startCooldown(seconds);
  } else {
    showText(el.postError, message || 'Your message could not be posted.');
  }
  if (code === 'unauthorized') sessionExpired();
  updateComposer();
}

async function post() {
  const body = el.body.value.trim();
  const count = codePoints(body);
  if (!session.me || count === 0 || count > maxLength() || el.send.disabled) return;
  showText(el.postError, '');
  lostBody = null;
  const live = liveSocket();
  if (live && live.isOpen) {
    const ref = newRef();
    const timer = setTimeout(() => {
      if (!pending.has(ref)) return;
      pending.delete(ref);
      lostBody = body;
      showText(el.postError, 'The server has not confirmed your message yet. It may still arrive.');
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
      showText(el.postError, 'Your message could not be posted.');
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
    if (el.postError.dataset.code !== 'rate_limited') showText(el.postError, '');
  });
  el.body.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      if (!el.send.disabled) post();
    }
  });
}
