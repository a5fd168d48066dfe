// Who we are in this room: the join form, "not you?", and the participant token kept in localStorage.
import { api, ApiError, roomPath, store, participantKey } from './api.js';
import { failPending, focusComposer, updateComposer } from './composer.js';
import { $, showText } from './dom.js';
import { refreshMessages } from './message-list.js';
import { roomName, session } from './room-session.js';
import { clearNotice, updatePanels } from './room-view.js';

const el = {
  joinForm: $('join-form'),
  nickname: $('nickname'),
  password: $('join-password'),
  joinSubmit: $('join-submit'),
  joinError: $('join-error'),
  leave: $('leave'),
};

let restartLive = () => {};

// The participant this browser joined the room as, if it kept one.
export function savedParticipant() {
  const saved = store.get(participantKey(roomName));
  if (saved && typeof saved === 'object' && typeof saved.token === 'string' && saved.token
      && typeof saved.nickname === 'string') {
    return { token: saved.token, nickname: saved.nickname, id: saved.id ?? null };
  }
  return null;
}

function saveParticipant(me) {
  session.me = me;
  store.set(participantKey(roomName), { token: me.token, nickname: me.nickname, id: me.id });
  refreshMessages();
}

export function forgetParticipant(reason) {
  session.me = null;
  store.remove(participantKey(roomName));
  failPending(null);
  refreshMessages();
  updatePanels();
  if (reason) showText(el.joinError, reason);
}

// The live socket's welcome says who the server takes us for (`you`), if anyone.
export function confirmParticipant(you) {
  if (!session.me) return;
  if (you && typeof you.nickname === 'string') {
    saveParticipant({ token: session.me.token, nickname: you.nickname, id: you.id ?? session.me.id });
    updatePanels();
  } else {
    forgetParticipant('The server no longer knows your nickname here. Please join again.');
  }
}

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
  if (session.room && session.room.has_password) {
    if (!el.password.value) {
      showText(el.joinError, 'This room has a password: type it to join.');
      el.password.focus();
      return;
    }
    body.password = el.password.value;
  }
  el.joinSubmit.disabled = true;
  try {
    const result = await api('POST', `${roomPath(roomName)}/join`, { body });
    const participant = (result && result.participant) || {};
    saveParticipant({
      token: result.token,
      nickname: participant.nickname || nickname,
      id: participant.id ?? null,
    });
    el.password.value = '';
    session.stopped = false;
    updatePanels();
    updateComposer();
    clearNotice('info');
    failPending(null);
    restartLive();
    focusComposer();
  } catch (err) {
    let message = err.message || 'Could not join.';
    if (err instanceof ApiError) {
      if (err.code === 'name_taken') message = `Nickname taken: someone here already goes by “${nickname}”. Pick another one.`;
      else if (err.status === 401) message = 'Wrong room password.';
      else if (err.status === 404) message = 'This room no longer exists.';
    }
    showText(el.joinError, message);
    const field = err instanceof ApiError && err.status === 401 ? el.password : el.nickname;
    field.focus();
    field.select();
  } finally {
    el.joinSubmit.disabled = false;
  }
}

function leave() {
  forgetParticipant('');
  el.nickname.value = '';
  restartLive();
  el.nickname.focus();
}

// restart(): reconnect the live socket, which carries our token (or none) in its URL.
export function setupIdentity({ restart }) {
  restartLive = restart;
  el.joinForm.addEventListener('submit', join);
  el.nickname.addEventListener('input', () => showText(el.joinError, ''));
  el.password.addEventListener('input', () => showText(el.joinError, ''));
  el.leave.addEventListener('click', leave);
}
