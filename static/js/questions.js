// Questions and votes: the Chat / Questions switch, the questions in "top" or "newest" order,
// voting, and the banner of the message pinned as "now discussing".
import { api, ApiError, roomPath } from './api.js';
import { $, showText } from './dom.js';
import { refreshMessages, render, shownMessage, updateMessage } from './message-list.js';
import { readToken, roomName, session } from './room-session.js';
import { appendLinkified, votesLabel } from './render.js';

const el = {
  tabs: $('view-tabs'),
  chatTab: $('tab-chat'),
  questionsTab: $('tab-questions'),
  count: $('questions-count'),
  orders: $('question-order'),
  scroller: $('scroller'),
  panel: $('questions-panel'),
  list: $('questions'),
  empty: $('questions-empty'),
  banner: $('pinned-banner'),
  bannerBody: $('pinned-body'),
  bannerMeta: $('pinned-meta'),
  voteError: $('vote-error'),
};

const questions = new Map(); // seq -> Message
let view = 'chat'; // 'chat' | 'questions'
let order = 'top'; // 'top' | 'newest'
let drawQueued = false;
let pinnedMessage = null; // the pinned message when it is not in the lists we hold

function voteCount(message) {
  return Number.isInteger(message.votes) ? message.votes : 0;
}

// Open questions before answered ones; then "top": most votes, then oldest; "newest": highest seq.
function ordered() {
  const byOrder = order === 'top'
    ? (a, b) => voteCount(b) - voteCount(a) || a.seq - b.seq
    : (a, b) => b.seq - a.seq;
  return [...questions.values()].sort((a, b) => Number(Boolean(a.answered)) - Number(Boolean(b.answered))
                                      || byOrder(a, b));
}

function draw() {
  drawQueued = false;
  const any = questions.size > 0;
  el.tabs.hidden = !(any || (session.room && session.room.qa));
  if (el.tabs.hidden && view === 'questions') view = 'chat';
  el.count.textContent = String([...questions.values()].filter((q) => !q.answered).length);
  el.chatTab.setAttribute('aria-pressed', String(view === 'chat'));
  el.questionsTab.setAttribute('aria-pressed', String(view === 'questions'));
  el.orders.hidden = view !== 'questions';
  for (const b of el.orders.querySelectorAll('[data-order]')) {
    b.setAttribute('aria-pressed', String(b.dataset.order === order));
  }
  el.scroller.hidden = view !== 'chat';
  el.panel.hidden = view !== 'questions';
  if (view === 'questions') {
    el.list.replaceChildren(...ordered().map(render));
    el.empty.hidden = any;
  }
  drawBanner();
}

function redraw() {
  if (drawQueued) return;
  drawQueued = true;
  requestAnimationFrame(draw);
}

function pinnedSeq() {
  const seq = session.room ? session.room.pinned : null;
  return Number.isInteger(seq) ? seq : null;
}

function drawBanner() {
  const seq = pinnedSeq();
  const message = seq === null ? null
    : questions.get(seq) || shownMessage(seq) || (pinnedMessage && pinnedMessage.seq === seq ? pinnedMessage : null);
  el.banner.hidden = message === null;
  if (!message) return;
  el.bannerBody.replaceChildren();
  appendLinkified(el.bannerBody, typeof message.body === 'string' ? message.body : '');
  const author = typeof message.author === 'string' ? message.author : '';
  el.bannerMeta.textContent = message.question ? `${author} · ${votesLabel(voteCount(message))}` : author;
}

// The room changed (a room frame, a PATCH): questions on or off, another message pinned.
export async function roomChanged() {
  redraw();
  const seq = pinnedSeq();
  if (seq === null || questions.has(seq) || shownMessage(seq) || (pinnedMessage && pinnedMessage.seq === seq)) return;
  try {
    const page = await api('GET', `${roomPath(roomName)}/messages?after=${seq - 1}&limit=1`, { token: readToken() });
    const found = ((page && page.messages) || []).find((m) => m.seq === seq);
    if (found) {
      pinnedMessage = found;
      redraw();
    }
  } catch {
    // The banner stays hidden; the next room frame tries again.
  }
}

// A message arrived (live or in the backlog).
export function noteMessage(message) {
  if (message.question) {
    questions.set(message.seq, message);
    redraw();
  } else if (message.seq === pinnedSeq()) {
    redraw();
  }
}

// A message changed: its votes, answered or pinned (an `updated` frame or an owner action).
export function applyUpdated(message) {
  if (!message || typeof message.seq !== 'number') return;
  updateMessage(message);
  const old = questions.get(message.seq);
  if (old) questions.set(message.seq, { ...old, ...message });
  if (pinnedMessage && pinnedMessage.seq === message.seq) pinnedMessage = { ...pinnedMessage, ...message };
  redraw();
}

export function forgetMessage(seq) {
  const had = questions.delete(seq);
  if (pinnedMessage && pinnedMessage.seq === seq) pinnedMessage = null;
  if (had || seq === pinnedSeq()) {
    if (seq === pinnedSeq()) session.room = { ...session.room, pinned: null };
    redraw();
  }
}

// Every question of the room (the backlog brings only the latest messages), and our votes.
export async function loadQuestions() {
  if (!session.room || !session.room.qa) {
    redraw();
    return;
  }
  try {
    const page = await api('GET', `${roomPath(roomName)}/questions?order=top&limit=1000`, { token: readToken() });
    for (const q of (page && page.questions) || []) {
      if (typeof q.seq === 'number') questions.set(q.seq, { ...q, ...(questions.get(q.seq) || {}) });
    }
  } catch {
    // The live backlog still brings the recent ones.
  }
  await loadVotes();
  redraw();
}

// Which questions we vote for (a participant's own; the owner does not vote).
export async function loadVotes() {
  session.voted = new Set();
  if (session.me && session.room && session.room.qa) {
    try {
      const result = await api('GET', `${roomPath(roomName)}/votes`, { token: session.me.token });
      session.voted = new Set(((result && result.seqs) || []).filter(Number.isInteger));
    } catch {
      // Shown as not voted; voting again is harmless (it is idempotent).
    }
  }
  refreshQuestions();
}

// The room is new (or gone): forget its questions.
export function clearQuestions() {
  questions.clear();
  pinnedMessage = null;
  session.voted = new Set();
  redraw();
}

async function vote(seq, on) {
  showText(el.voteError, '');
  try {
    const result = await api(on ? 'PUT' : 'DELETE', `${roomPath(roomName)}/messages/${seq}/vote`,
                             { token: session.me.token });
    if (result && result.voted) session.voted.add(seq);
    else session.voted.delete(seq);
    applyUpdated(result && Number.isInteger(result.votes) ? { seq, votes: result.votes } : { seq });
  } catch (err) {
    showText(el.voteError, err instanceof ApiError ? err.message : 'Your vote did not go through.');
  }
}

// Redraws the vote buttons in both lists (after a join, leave, or our votes loaded).
export function refreshQuestions() {
  refreshMessages();
  redraw();
}

function show(next) {
  view = next;
  redraw();
}

export function setupQuestions() {
  el.chatTab.addEventListener('click', () => show('chat'));
  el.questionsTab.addEventListener('click', () => show('questions'));
  el.orders.addEventListener('click', (event) => {
    const b = event.target.closest('[data-order]');
    if (!b) return;
    order = b.dataset.order;
    redraw();
  });
  for (const list of [$('messages'), el.list]) {
    list.addEventListener('click', (event) => {
      const b = event.target.closest('button.vote');
      if (!b || b.disabled || !session.me) return;
      const seq = Number(b.closest('li').dataset.seq);
      vote(seq, b.dataset.action === 'vote');
    });
  }
}
