// The room as the reader sees it: header, notices, connection state, and which of join form or composer shows.
import { $, showText } from './dom.js';
import { roomName, session } from './room-session.js';

const STATE_LABELS = { connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…', offline: 'Offline' };

const el = {
  shell: $('room-shell'),
  title: $('room-title'),
  name: $('room-name'),
  statePill: $('room-state'),
  conn: $('conn-state'),
  online: $('online'),
  notice: $('room-notice'),
  joinForm: $('join-form'),
  joinIntro: $('join-intro'),
  password: $('join-password'),
  composer: $('composer'),
  me: $('me'),
};

export function setupRoomView() {
  el.name.textContent = '/' + roomName;
}

// Shows session.room: its title, name, online count, password field and state.
export function showRoom() {
  const r = session.room;
  const title = r.title || r.name || roomName;
  el.title.textContent = title;
  document.title = `${title} · tmd`;
  el.name.textContent = '/' + (r.name || roomName);
  if (typeof r.online === 'number') showOnline(r.online);
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
}

export function showOnline(count) {
  el.online.textContent = String(count);
}

export function setNotice(text, tone = 'info') {
  el.notice.dataset.tone = tone;
  showText(el.notice, text);
}

// Clears the notice if it has one of these tones.
export function clearNotice(...tones) {
  if (tones.includes(el.notice.dataset.tone)) setNotice('');
}

const STATE_NOTICES = {
  paused: {
    owner: 'You paused the room: everyone can read along, but nobody can post until you resume it.',
    other: 'The owner paused the room: you can read along, but posting is off for now.',
  },
  closed: {
    owner: 'You closed the room for good: it stays readable, but nobody can post any more.',
    other: 'This room is closed for good: you can still read it, but nobody can post any more.',
  },
};

const LOCKED_NOTICES = {
  owner: 'You locked the room: only you post, as the host; everyone reads along and can vote.',
  other: 'The owner locked the room: only the host posts for now; you can read along and vote.',
};

const JOIN_INTRO = {
  owner: 'You post as the host. To take part under a nickname as well, pick one.',
  other: 'You are reading as a guest. Pick a nickname to take part.',
};

// Which of join form / composer / notice are visible, from the room state and who we are.
// (A closed room keeps the composer of those who joined, disabled, under its notice.)
export function updatePanels() {
  const r = session.room;
  const roomState = r ? r.state : null;
  if (session.stopped) {
    el.joinForm.hidden = true;
    el.composer.hidden = true;
    return;
  }
  const notice = STATE_NOTICES[roomState];
  if (notice) setNotice(session.owner ? notice.owner : notice.other, roomState);
  else clearNotice('closed', 'paused');
  if (r && r.locked && roomState === 'open') {
    setNotice(session.owner ? LOCKED_NOTICES.owner : LOCKED_NOTICES.other, 'locked');
  } else {
    clearNotice('locked');
  }
  const joined = session.me !== null;
  el.composer.hidden = !(joined || session.owner);
  el.joinForm.hidden = joined || roomState === 'closed' || r === null;
  el.joinIntro.textContent = session.owner ? JOIN_INTRO.owner : JOIN_INTRO.other;
  if (joined) el.me.textContent = session.me.nickname;
}

export function setConnState(connState) {
  el.conn.dataset.state = connState;
  el.conn.textContent = STATE_LABELS[connState] || connState;
}

export function showNotFound() {
  el.shell.hidden = true;
  $('missing-name').textContent = '/' + roomName;
  $('not-found').hidden = false;
  document.title = 'No such room · tmd';
  document.body.classList.add('front-page');
  document.body.classList.remove('room-page');
}
