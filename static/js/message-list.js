// The message list: seq order, following the newest, the "New messages" button, earlier pages, the
// resume point, and messages changed in place (votes, answered, pinned).
import { api, roomPath } from './api.js';
import { $ } from './dom.js';
import { messageActions, renderMessage } from './render.js';
import { isOwnMessage, readToken, roomName, session } from './room-session.js';
import { setNotice } from './room-view.js';

const NEAR_BOTTOM_PX = 80;

const el = {
  scroller: $('scroller'),
  messages: $('messages'),
  empty: $('empty-state'),
  earlier: $('load-earlier'),
  newMessages: $('new-messages'),
};

const items = new Map(); // seq -> <li>
const shown = new Map(); // seq -> the Message shown in that <li>
let highestSeq = 0; // highest seq received over the live socket: the resume point
let resumeFloor = null; // where the first backlog started: resuming from there loses nothing
let floorSeq = null; // lowest seq we have covered going backwards (for "load earlier")
let welcomed = false;
let stuckToBottom = true;
let scrollQueued = false;

function isNearBottom() {
  const s = el.scroller;
  return s.scrollHeight - s.scrollTop - s.clientHeight < NEAR_BOTTOM_PX;
}

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

function updateEmpty() {
  el.empty.hidden = !(welcomed && items.size === 0);
}

function updateEarlier() {
  el.earlier.hidden = !(floorSeq !== null && floorSeq > 1);
}

// Who may vote: a participant, in a room with questions on.
export function voteOptions(message) {
  return {
    voted: session.voted.has(message.seq),
    canVote: session.me !== null && Boolean(session.room && session.room.qa),
  };
}

// The <li> for `message`, with the owner's buttons when we own the room.
export function render(message) {
  const li = renderMessage(message, { me: session.me ? session.me.nickname : null, vote: voteOptions(message) });
  if (session.owner) {
    const author = li.dataset.participant;
    const mutable = author !== undefined && li.classList.contains('kind-chat') && !li.classList.contains('mine');
    li.querySelector('.meta').appendChild(messageActions(message, mutable ? session.owner.muted.has(author) : null));
  }
  return li;
}

// Inserts a message in seq order unless it is already shown. Returns true when added.
function addMessage(message) {
  if (!message || typeof message.seq !== 'number' || items.has(message.seq)) return false;
  const li = render(message);
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
  items.set(message.seq, li);
  shown.set(message.seq, message);
  return true;
}

// The message of that seq, if it is shown.
export function shownMessage(seq) {
  return shown.get(seq) || null;
}

// A message changed (an `updated` frame, an owner action's answer): redraw it if it is shown.
export function updateMessage(message) {
  const old = shown.get(message.seq);
  if (!old) return;
  const merged = { ...old, ...message };
  shown.set(message.seq, merged);
  const li = render(merged);
  items.get(message.seq).replaceWith(li);
  items.set(message.seq, li);
}

// A message from the live socket. Returns true when it is new.
export function addLiveMessage(message) {
  if (typeof message.seq !== 'number' || message.seq <= highestSeq) return false; // duplicate
  highestSeq = message.seq;
  if (floorSeq === null || message.seq < floorSeq) floorSeq = message.seq;
  const wasNear = stuckToBottom;
  if (!addMessage(message)) return false;
  if (wasNear || isOwnMessage(message)) scrollToBottom();
  else el.newMessages.hidden = false;
  updateEmpty();
  updateEarlier();
  return true;
}

// The message an HTTP post returned. Shown now, but the resume point stays with the socket so
// nothing before it is skipped.
export function addPostedMessage(message) {
  if (message && typeof message.seq === 'number' && addMessage(message)) {
    scrollToBottom();
    updateEmpty();
  }
}

export function removeMessage(seq) {
  const li = items.get(seq);
  if (!li) return;
  li.remove();
  items.delete(seq);
  shown.delete(seq);
  updateEmpty();
}

// Redraws every message (our own marked, the owner's buttons, the vote buttons), after we
// joined or left, voted elsewhere, or the owner's view changed (a mute, an owner token found invalid).
export function refreshMessages() {
  for (const [seq, message] of shown) {
    const li = render(message);
    items.get(seq).replaceWith(li);
    items.set(seq, li);
  }
}

// The room was deleted, or made anew under its name: its messages are gone. `startOver` also
// forgets the resume point, so the next connection starts afresh.
export function clearMessages({ startOver = false } = {}) {
  for (const li of items.values()) li.remove();
  items.clear();
  shown.clear();
  el.empty.hidden = true;
  el.earlier.hidden = true;
  if (startOver) {
    highestSeq = 0;
    resumeFloor = null;
    floorSeq = null;
    welcomed = false;
  }
}

// The live socket's welcome (`room` is the room it describes); the backlog follows it.
export function welcome(room) {
  if (!welcomed) {
    // Announce new messages to screen readers, but not the backlog that follows the welcome.
    setTimeout(() => el.messages.setAttribute('aria-live', 'polite'), 2000);
  }
  welcomed = true;
  if (resumeFloor === null && room && typeof room.last_seq === 'number') {
    resumeFloor = Math.max(0, room.last_seq - 100);
    if (floorSeq === null && resumeFloor > 0) floorSeq = resumeFloor + 1;
    updateEarlier();
  }
  updateEmpty();
  if (stuckToBottom) scrollToBottom();
}

// The `since` for the next live connection, or null to let the server send its usual backlog.
export function resumePoint() {
  // Without `since` the server sends the last 100 again. Once welcomed we know where that first
  // backlog began, so even a reconnect before any message arrived resumes without a gap.
  const since = resumeFloor === null ? highestSeq : Math.max(highestSeq, resumeFloor);
  return since > 0 || resumeFloor !== null ? since : null;
}

async function loadEarlier() {
  if (floorSeq === null || floorSeq <= 1) return;
  const after = Math.max(0, floorSeq - 1 - 100);
  const limit = floorSeq - 1 - after;
  el.earlier.disabled = true;
  try {
    const result = await api('GET', `${roomPath(roomName)}/messages?after=${after}&limit=${limit}`,
                             { token: readToken() });
    const oldHeight = el.scroller.scrollHeight;
    const oldTop = el.scroller.scrollTop;
    for (const message of (result && result.messages) || []) {
      if (message.seq < floorSeq) addMessage(message);
    }
    floorSeq = after + 1;
    el.scroller.scrollTop = oldTop + (el.scroller.scrollHeight - oldHeight);
    updateEmpty();
  } catch (err) {
    setNotice(`Could not load earlier messages: ${err.message}`, 'error');
  } finally {
    el.earlier.disabled = false;
    updateEarlier();
  }
}

export function setupMessageList() {
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
}
