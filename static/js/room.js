// Room page: room header, live message list, join form and composer.
import { api, ApiError, NAME_RE, roomPath, store, ownerKey, participantKey } from './api.js';
import { LiveConnection } from './live.js';
import { renderMessage } from './render.js';

const $ = (id) => document.getElementById(id);
const NEAR_BOTTOM_PX = 80;
const ACK_TIMEOUT = 10000;
const STATE_LABELS = { connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…', offline: 'Offline' };

const el = {
  shell: $('room-shell'),
  title: $('room-title'),
  name: $('room-name'),
  statePill: $('room-state'),
  conn: $('conn-state'),
  online: $('online'),
  link: $('room-link'),
  copy: $('copy-link'),
  copyStatus: $('copy-status'),
  notice: $('room-notice'),
  scroller: $('scroller'),
  messages: $('messages'),
  empty: $('empty-state'),
  earlier: $('load-earlier'),
  newMessages: $('new-messages'),
  joinForm: $('join-form'),
  nickname: $('nickname'),
  password: $('join-password'),
  joinSubmit: $('join-submit'),
  joinError: $('join-error'),
  composer: $('composer'),
  me: $('me'),
  leave: $('leave'),
  body: $('body'),
  send: $('send'),
  counter: $('counter'),
  postError: $('post-error'),
  ownerBar: $('owner-bar'),
  ownerPause: $('owner-pause'),
  ownerResume: $('owner-resume'),
  ownerClose: $('owner-close'),
  ownerError: $('owner-error'),
};

const name = decodeURIComponent(location.pathname.split('/').filter(Boolean)[0] || '').toLowerCase();

const state = {
  room: null,
  me: null, // {token, nickname, id}
  ownerToken: null,
  highestSeq: 0, // highest seq received over the live socket: the resume point
  resumeFloor: null, // where the first backlog started: resuming from there loses nothing
  floorSeq: null, // lowest seq we have covered going backwards (for "load earlier")
  items: new Map(), // seq -> <li>
  pending: new Map(), // ref -> {body, timer}
  lostBody: null, // a post whose ack never came (socket dropped): cleared if it shows up
  sendingHttp: false,
  cooldownUntil: 0,
  cooldownTimer: null,
  stopped: false, // the room is gone or the server refused us for good
  welcomed: false,
  refCounter: 0,
};

let live = null;

// ---------------------------------------------------------------- small helpers

function showText(node, text) {
  node.textContent = text || '';
  node.hidden = !text;
}

function newRef() {
  state.refCounter += 1;
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}-${state.refCounter}`;
}

function codePoints(text) {
  return [...text.trim()].length;
}

function maxLength() {
  const max = state.room && Number(state.room.max_length);
  return max > 0 ? max : 280;
}

function isNearBottom() {
  const s = el.scroller;
  return s.scrollHeight - s.scrollTop - s.clientHeight < NEAR_BOTTOM_PX;
}

let stuckToBottom = true;
let scrollQueued = false;
function scrollToBottom() {
  if (scrollQueued) return;
  scrollQueued = true;
  requestAnimationFrame(() => {
    scrollQueued = false;
    el.scroller.scrollTop = el.scroller.scrollHeight;
    el.newMessages.hidden = true;
    stuckToBottom = true;
  });
}

// ---------------------------------------------------------------- participant and owner

function loadParticipant() {
  const saved = store.get(participantKey(name));
  if (saved && typeof saved === 'object' && typeof saved.token === 'string' && saved.token
      && typeof saved.nickname === 'string') {
    return { token: saved.token, nickname: saved.nickname, id: saved.id ?? null };
  }
  return null;
}

function saveParticipant(me) {
  state.me = me;
  store.set(participantKey(name), { token: me.token, nickname: me.nickname, id: me.id });
  refreshMine();
}

function forgetParticipant(reason) {
  state.me = null;
  store.remove(participantKey(name));
  failPending(null);
  refreshMine();
  updatePanels();
  if (reason) showText(el.joinError, reason);
}

function refreshMine() {
  const nick = state.me ? state.me.nickname.toLowerCase() : null;
  for (const li of state.items.values()) {
    if (!li.classList.contains('kind-chat')) continue;
    const author = li.querySelector('.author');
    li.classList.toggle('mine', nick !== null && author !== null && author.textContent.toLowerCase() === nick);
  }
}

// ---------------------------------------------------------------- room display

function applyRoom(room) {
  if (!room || typeof room !== 'object') return;
  const previous = state.room;
  state.room = { ...(previous || {}), ...room };
  const r = state.room;
  if (previous && previous.state !== r.state) showText(el.postError, '');
  const title = r.title || r.name || name;
  el.title.textContent = title;
  document.title = `${title} · tmd`;
  el.name.textContent = '/' + (r.name || name);
  if (typeof r.online === 'number') el.online.textContent = String(r.online);
  if (r.expires_at) {
    const when = new Date(r.expires_at);
    if (!Number.isNaN(when.getTime())) el.name.title = 'Open until ' + when.toLocaleString();
  }
  el.password.hidden = !r.has_password;
  el.password.required = Boolean(r.has_password);
  if (r.state && r.state !== 'open') {
    el.statePill.hidden = false;
    el.statePill.dataset.state = r.state;
    el.statePill.textContent = r.state;
  } else {
    el.statePill.hidden = true;
  }
  updatePanels();
  updateComposer();
}

function setNotice(text, tone = 'info') {
  el.notice.dataset.tone = tone;
  showText(el.notice, text);
}

// Which of join form / composer / notice are visible, from the room state and who we are.
function updatePanels() {
  const r = state.room;
  const roomState = r ? r.state : null;
  if (state.stopped) {
    el.joinForm.hidden = true;
    el.composer.hidden = true;
    return;
  }
  if (roomState === 'closed') {
    setNotice('This room is closed. You can still read it, but nobody can post any more.', 'closed');
  } else if (roomState === 'paused') {
    setNotice('The owner has paused this room. You can read along; posting is off for now.', 'paused');
  } else if (el.notice.dataset.tone === 'closed' || el.notice.dataset.tone === 'paused') {
    setNotice('');
  }
  const joined = state.me !== null;
  el.composer.hidden = !joined || roomState === 'closed';
  el.joinForm.hidden = joined || roomState === 'closed' || r === null;
  if (joined) el.me.textContent = state.me.nickname;
  updateOwnerBar();
}

function updateOwnerBar() {
  const r = state.room;
  if (!state.ownerToken || !r || state.stopped) {
    el.ownerBar.hidden = true;
    return;
  }
  el.ownerBar.hidden = false;
  el.ownerPause.hidden = r.state !== 'open';
  el.ownerResume.hidden = r.state !== 'paused';
  el.ownerClose.hidden = r.state === 'closed';
}

function setConnState(connState) {
  el.conn.dataset.state = connState;
  el.conn.textContent = STATE_LABELS[connState] || connState;
  updateComposer();
}

// ---------------------------------------------------------------- messages

function updateEmpty() {
  el.empty.hidden = !(state.welcomed && state.items.size === 0);
}

function updateEarlier() {
  el.earlier.hidden = !(state.floorSeq !== null && state.floorSeq > 1);
}

// Inserts a message in seq order unless it is already shown. Returns true when added.
function addMessage(message) {
  if (!message || typeof message.seq !== 'number' || state.items.has(message.seq)) return false;
  const li = renderMessage(message, {
    me: state.me ? state.me.nickname : null,
    canDelete: Boolean(state.ownerToken),
  });
  let before = null;
  const lastLi = el.messages.lastElementChild;
  if (lastLi && Number(lastLi.dataset.seq) > message.seq) {
    for (const child of el.messages.children) {
      if (Number(child.dataset.seq) > message.seq) {
        before = child;
        break;
      }
    }
  }
  el.messages.insertBefore(li, before);
  state.items.set(message.seq, li);
  return true;
}

function onLiveMessage(message) {
  if (typeof message.seq !== 'number' || message.seq <= state.highestSeq) return; // duplicate
  state.highestSeq = message.seq;
  if (state.floorSeq === null || message.seq < state.floorSeq) state.floorSeq = message.seq;
  const wasNear = stuckToBottom;
  const mine = state.me && message.kind === 'chat'
    && String(message.author).toLowerCase() === state.me.nickname.toLowerCase();
  if (!addMessage(message)) return;
  if (mine && state.lostBody !== null && message.body === state.lostBody) {
    // The post whose ack got lost did go through.
    if (el.body.value.trim() === state.lostBody) el.body.value = '';
    state.lostBody = null;
    showText(el.postError, '');
    updateComposer();
  }
  if (wasNear || mine) scrollToBottom();
  else el.newMessages.hidden = false;
  updateEmpty();
  updateEarlier();
}

function removeMessage(seq) {
  const li = state.items.get(seq);
  if (!li) return;
  li.remove();
  state.items.delete(seq);
  updateEmpty();
}

async function loadEarlier() {
  if (state.floorSeq === null || state.floorSeq <= 1) return;
  const after = Math.max(0, state.floorSeq - 1 - 100);
  const limit = state.floorSeq - 1 - after;
  el.earlier.disabled = true;
  try {
    const result = await api('GET', `${roomPath(name)}/messages?after=${after}&limit=${limit}`,
                             { token: state.me ? state.me.token : undefined });
    const oldHeight = el.scroller.scrollHeight;
    const oldTop = el.scroller.scrollTop;
    for (const message of (result && result.messages) || []) {
      if (message.seq < state.floorSeq) addMessage(message);
    }
    state.floorSeq = after + 1;
    el.scroller.scrollTop = oldTop + (el.scroller.scrollHeight - oldHeight);
    updateEmpty();
  } catch (err) {
    setNotice(`Could not load earlier messages: ${err.message}`, 'error');
  } finally {
    el.earlier.disabled = false;
    updateEarlier();
  }
}

// ---------------------------------------------------------------- live socket

function liveUrl() {
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  const params = new URLSearchParams();
  // Without `since` the server sends the last 100 again. Once welcomed we know where that first
  // backlog began, so even a reconnect before any message arrived resumes without a gap.
  const since = state.resumeFloor === null ? state.highestSeq : Math.max(state.highestSeq, state.resumeFloor);
  if (since > 0 || state.resumeFloor !== null) params.set('since', String(since));
  const token = state.me ? state.me.token : null;
  if (token) params.set('token', token);
  const query = params.toString();
  return {
    href: `${proto}://${location.host}${roomPath(name)}/live${query ? '?' + query : ''}`,
    usedToken: token,
  };
}

function onFrame(frame) {
  switch (frame.type) {
    case 'welcome':
      if (!state.welcomed) {
        // Announce new messages to screen readers, but not the backlog that follows the welcome.
        setTimeout(() => el.messages.setAttribute('aria-live', 'polite'), 2000);
      }
      state.welcomed = true;
      if (state.resumeFloor === null && frame.room && typeof frame.room.last_seq === 'number') {
        state.resumeFloor = Math.max(0, frame.room.last_seq - 100);
        if (state.floorSeq === null && state.resumeFloor > 0) state.floorSeq = state.resumeFloor + 1;
        updateEarlier();
      }
      applyRoom(frame.room);
      if (state.me) {
        if (frame.you && typeof frame.you.nickname === 'string') {
          saveParticipant({ token: state.me.token, nickname: frame.you.nickname, id: frame.you.id ?? state.me.id });
          updatePanels();
        } else {
          forgetParticipant('The server no longer knows your nickname here. Please join again.');
        }
      }
      updateEmpty();
      if (stuckToBottom) scrollToBottom();
      break;
    case 'message':
      onLiveMessage(frame.message || {});
      break;
    case 'deleted':
      removeMessage(frame.seq);
      break;
    case 'room':
      applyRoom(frame.room);
      break;
    case 'presence':
      if (typeof frame.online === 'number') el.online.textContent = String(frame.online);
      break;
    case 'ack':
      settlePending(frame.ref, null);
      break;
    case 'error':
      if (frame.ref && state.pending.has(frame.ref)) {
        settlePending(frame.ref, frame);
      } else if (live && live.isOpen) {
        // (Before the welcome, an error explains the close that follows: onClose handles it.)
        showText(el.postError, frame.message || 'The server reported an error.');
        if (frame.code === 'unauthorized') forgetParticipant('Your session has expired. Please join again.');
      }
      break;
    default:
      break;
  }
}

function onClose(code, reason, usedToken) {
  failPending('The connection dropped before the server confirmed your message. '
              + 'It may have been posted; check before sending again.');
  if (code === 4404) {
    state.stopped = true;
    store.remove(participantKey(name));
    store.remove(ownerKey(name));
    setNotice('This room has been deleted.', 'error');
    updatePanels();
    return 'stop';
  }
  if (code === 1008) {
    if (usedToken) {
      forgetParticipant('Your nickname’s session is no longer valid. Please join again.');
      return 'now';
    }
    if (state.room && state.room.has_password) {
      setNotice('This room has a password. Join with it to read and post.', 'info');
    } else {
      setNotice(`The server refused the live connection${reason ? ` (${reason})` : ''}. Reload to try again.`, 'error');
    }
    return 'stop';
  }
  return 'retry';
}

// ---------------------------------------------------------------- composer

function updateComposer() {
  const count = codePoints(el.body.value);
  const max = maxLength();
  el.counter.textContent = `${count} / ${max}`;
  // Warn in the last tenth (at most the last 20 characters) before the limit.
  const near = count > 0 && max - count < Math.max(1, Math.min(20, Math.ceil(max / 10)));
  el.counter.dataset.level = count > max ? 'over' : near ? 'warn' : 'ok';
  el.body.setAttribute('aria-invalid', count > max ? 'true' : 'false');
  const roomOpen = !state.room || state.room.state === 'open';
  el.body.disabled = !state.me || !roomOpen || state.stopped;
  el.body.placeholder = roomOpen ? 'Write a message…' : 'Posting is off in this room';
  el.send.disabled = el.body.disabled || count === 0 || count > max || state.sendingHttp
    || state.pending.size > 0 || Date.now() < state.cooldownUntil;
}

function autosize() {
  el.body.style.height = 'auto';
  el.body.style.height = Math.min(el.body.scrollHeight + 2, 200) + 'px';
}

function settlePending(ref, errorFrame) {
  const entry = state.pending.get(ref);
  if (!entry) return;
  clearTimeout(entry.timer);
  state.pending.delete(ref);
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

// Pending socket posts can no longer be confirmed (socket closed or replaced).
function failPending(message) {
  if (state.pending.size === 0) return;
  for (const entry of state.pending.values()) {
    clearTimeout(entry.timer);
    state.lostBody = entry.body;
  }
  state.pending.clear();
  if (message) showText(el.postError, message);
  updateComposer();
}

function startCooldown(seconds) {
  state.cooldownUntil = Date.now() + seconds * 1000;
  clearTimeout(state.cooldownTimer);
  state.cooldownTimer = setTimeout(() => {
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
  if (code === 'unauthorized') forgetParticipant('Your session has expired. Please join again.');
  updateComposer();
}

async function post() {
  const body = el.body.value.trim();
  const count = codePoints(body);
  if (!state.me || count === 0 || count > maxLength() || el.send.disabled) return;
  showText(el.postError, '');
  state.lostBody = null;
  if (live && live.isOpen) {
    const ref = newRef();
    const timer = setTimeout(() => {
      if (!state.pending.has(ref)) return;
      state.pending.delete(ref);
      state.lostBody = body;
      showText(el.postError, 'The server has not confirmed your message yet. It may still arrive.');
      updateComposer();
    }, ACK_TIMEOUT);
    state.pending.set(ref, { body, timer });
    live.send({ type: 'post', body, ref });
    updateComposer();
    return;
  }
  state.sendingHttp = true;
  updateComposer();
  try {
    const message = await api('POST', `${roomPath(name)}/messages`, { body: { body }, token: state.me.token });
    // Shown now, but the resume point stays with the socket so nothing before it is skipped.
    if (message && typeof message.seq === 'number' && addMessage(message)) {
      scrollToBottom();
      updateEmpty();
    }
    if (el.body.value.trim() === body) {
      el.body.value = '';
      autosize();
    }
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      forgetParticipant('Your session has expired. Please join again.');
    } else if (err instanceof ApiError) {
      showPostError(err.code, err.message, err.retryAfter);
    } else {
      showText(el.postError, 'Your message could not be posted.');
    }
  } finally {
    state.sendingHttp = false;
    updateComposer();
  }
}

// ---------------------------------------------------------------- join

async function join(event) {
  event.preventDefault();
  showText(el.joinError, '');
  const nickname = el.nickname.value.trim();
  if (!nickname) {
    showText(el.joinError, 'Type a nickname first.');
    el.nickname.focus();
    return;
  }
  if ([...nickname].length > 32) {
    showText(el.joinError, 'Nicknames can have at most 32 characters.');
    return;
  }
  const body = { nickname };
  if (state.room && state.room.has_password) body.password = el.password.value;
  el.joinSubmit.disabled = true;
  try {
    const result = await api('POST', `${roomPath(name)}/join`, { body });
    const participant = (result && result.participant) || {};
    saveParticipant({
      token: result.token,
      nickname: participant.nickname || nickname,
      id: participant.id ?? null,
    });
    el.password.value = '';
    state.stopped = false;
    updatePanels();
    updateComposer();
    if (el.notice.dataset.tone === 'info') setNotice('');
    failPending(null);
    live.restart();
    el.body.focus();
  } catch (err) {
    let message = err.message || 'Could not join.';
    if (err instanceof ApiError) {
      if (err.code === 'name_taken') message = `Nickname taken: someone here already goes by “${nickname}”. Pick another one.`;
      else if (err.status === 401) message = 'Wrong room password.';
      else if (err.status === 404) message = 'This room no longer exists.';
    }
    showText(el.joinError, message);
    el.nickname.focus();
  } finally {
    el.joinSubmit.disabled = false;
  }
}

function leave() {
  forgetParticipant('');
  el.nickname.value = '';
  live.restart();
  el.nickname.focus();
}

// ---------------------------------------------------------------- owner controls

async function ownerSetState(newState) {
  el.ownerError.textContent = '';
  try {
    const room = await api('PATCH', roomPath(name), { body: { state: newState }, token: state.ownerToken });
    applyRoom(room && room.room ? room.room : room);
  } catch (err) {
    el.ownerError.textContent = err.message;
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
      store.remove(ownerKey(name));
      state.ownerToken = null;
      updateOwnerBar();
    }
  }
}

async function ownerDelete(seq) {
  el.ownerError.textContent = '';
  try {
    await api('DELETE', `${roomPath(name)}/messages/${seq}`, { token: state.ownerToken });
    removeMessage(seq);
  } catch (err) {
    el.ownerError.textContent = err.message;
  }
}

// ---------------------------------------------------------------- copy link

async function copyLink() {
  const text = el.link.href;
  let ok = false;
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      ok = true;
    }
  } catch {
    ok = false;
  }
  if (!ok) {
    const area = document.createElement('textarea');
    area.value = text;
    area.readOnly = true;
    area.className = 'offscreen';
    document.body.appendChild(area);
    area.select();
    try {
      ok = document.execCommand('copy');
    } catch {
      ok = false;
    }
    area.remove();
  }
  el.copyStatus.textContent = ok ? 'Copied!' : 'Press Ctrl+C to copy';
  if (!ok) {
    const range = document.createRange();
    range.selectNodeContents(el.link);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }
  setTimeout(() => { el.copyStatus.textContent = ''; }, 2500);
}

// ---------------------------------------------------------------- start

function showNotFound() {
  el.shell.hidden = true;
  $('missing-name').textContent = '/' + name;
  $('not-found').hidden = false;
  document.title = 'No such room · tmd';
  document.body.classList.add('front-page');
  document.body.classList.remove('room-page');
}

function wireEvents() {
  el.joinForm.addEventListener('submit', join);
  el.nickname.addEventListener('input', () => showText(el.joinError, ''));
  el.leave.addEventListener('click', leave);
  el.composer.addEventListener('submit', (event) => {
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
  el.scroller.addEventListener('scroll', () => {
    stuckToBottom = isNearBottom();
    if (stuckToBottom) el.newMessages.hidden = true;
  }, { passive: true });
  // The dock grows and shrinks (errors, a taller textarea, the phone keyboard): keep the newest
  // messages in view when the reader was at the bottom.
  if ('ResizeObserver' in window) {
    new ResizeObserver(() => {
      // Runs after layout and before paint: pinning here avoids a frame with the list jumped up.
      if (stuckToBottom) el.scroller.scrollTop = el.scroller.scrollHeight;
    }).observe(el.scroller);
  }
  el.newMessages.addEventListener('click', () => scrollToBottom());
  el.earlier.addEventListener('click', loadEarlier);
  el.copy.addEventListener('click', copyLink);
  el.ownerPause.addEventListener('click', () => ownerSetState('paused'));
  el.ownerResume.addEventListener('click', () => ownerSetState('open'));
  el.ownerClose.addEventListener('click', () => {
    if (window.confirm('Close this room for good? It stays readable but nobody can post again.')) {
      ownerSetState('closed');
    }
  });
  el.messages.addEventListener('click', (event) => {
    const button = event.target.closest('button.delete-message');
    if (button) ownerDelete(Number(button.dataset.seq));
  });
}

async function main() {
  if (!NAME_RE.test(name)) {
    showNotFound();
    return;
  }
  if (location.pathname !== '/' + name) history.replaceState(null, '', '/' + name + location.search);
  el.name.textContent = '/' + name;
  el.link.href = `${location.origin}/${name}`;
  el.link.textContent = `${location.host}/${name}`;
  state.me = loadParticipant();
  state.ownerToken = store.getString(ownerKey(name));
  wireEvents();
  updateComposer();

  try {
    applyRoom(await api('GET', roomPath(name)));
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      store.remove(participantKey(name));
      store.remove(ownerKey(name));
      showNotFound();
      return;
    }
    setNotice(`Could not load the room: ${err.message}`, 'error');
  }

  live = new LiveConnection({ url: liveUrl, onFrame, onClose, onState: setConnState });
  live.start();
}

main();
