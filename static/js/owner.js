// The owner bar, shown to the browser that created the room: pause, resume and close the room,
// download its transcript, keep it longer, delete it. People and messages are in moderation.js.
import { api, ApiError, fetchBlob, ownerKey, roomPath, store } from './api.js';
import { $, showText } from './dom.js';
import { refreshMessages } from './message-list.js';
import { forgetRoomTokens, roomName, session } from './room-session.js';
import { setNotice } from './room-view.js';

const MAX_LIFETIME = 31536000; // seconds from the room's creation

const el = {
  bar: $('owner-bar'),
  pause: $('owner-pause'),
  resume: $('owner-resume'),
  close: $('owner-close'),
  menus: [...document.querySelectorAll('#owner-bar details.menu')],
  present: $('present-link'),
  formats: $('transcript-formats'),
  withStats: $('transcript-stats'),
  lifetime: $('lifetime'),
  expiry: $('owner-expiry'),
  deleteRoom: $('owner-delete'),
  status: $('owner-status'),
};

let applyRoom = () => {};

// The owner token the front page kept when this browser created the room.
export function savedOwner() {
  const token = store.getString(ownerKey(roomName));
  return token ? { token, muted: new Set() } : null;
}

// Says in the bar how an owner action went.
export function ownerStatus(text, tone = 'info') {
  el.status.dataset.tone = tone;
  showText(el.status, text);
}

// The server refused the owner token: this browser does not own the room after all.
export function dropOwner() {
  session.owner = null;
  store.remove(ownerKey(roomName));
  updateOwnerBar();
  refreshMessages();
  setNotice('The server no longer takes this browser for the room’s owner: the owner controls are gone.', 'error');
}

// An API call on this room (`path` below it) with the owner token.
export async function ownerApi(method, path, body) {
  try {
    return await api(method, roomPath(roomName) + path, { body, token: session.owner.token });
  } catch (err) {
    if (err instanceof ApiError && (err.code === 'unauthorized' || err.code === 'forbidden')) dropOwner();
    throw err;
  }
}

// Runs an owner action; its failure is shown in the bar.
export async function ownerAction(work) {
  ownerStatus('');
  try {
    await work();
  } catch (err) {
    ownerStatus(err.message || 'That did not work.', 'error');
  }
}

function lifetimeSeconds(room) {
  return Math.round((Date.parse(room.expires_at) - Date.parse(room.created_at)) / 1000);
}

export function updateOwnerBar() {
  const r = session.room;
  el.bar.hidden = !session.owner || !r || session.stopped;
  if (el.bar.hidden) return;
  el.pause.hidden = r.state !== 'open';
  el.resume.hidden = r.state !== 'paused';
  el.close.hidden = r.state === 'closed';
  el.lifetime.hidden = r.state === 'closed';
  const expires = new Date(r.expires_at);
  el.expiry.textContent = Number.isNaN(expires.getTime()) ? '' : `Open until ${expires.toLocaleString()}.`;
  const full = !(lifetimeSeconds(r) < MAX_LIFETIME);
  for (const button of el.lifetime.querySelectorAll('button')) button.disabled = full;
}

function setState(state) {
  return ownerAction(async () => applyRoom(await ownerApi('PATCH', '', { state })));
}

function extend(seconds) {
  const lifetime = Math.min(MAX_LIFETIME, lifetimeSeconds(session.room) + seconds);
  return ownerAction(async () => applyRoom(await ownerApi('PATCH', '', { lifetime })));
}

// Fetches the transcript with the owner token (a password room wants it) and saves it as a file;
// with participation statistics if asked (a CSV transcript stays one row per message).
function download(format) {
  const stats = el.withStats.checked && format !== 'csv' ? '&stats=true' : '';
  return ownerAction(async () => {
    const blob = await fetchBlob(`${roomPath(roomName)}/transcript?format=${format}${stats}`,
                                 { token: session.owner.token });
    const url = URL.createObjectURL(blob);
    const a = document.createElement('a'); // left out of the document: its click closes no menu
    a.href = url;
    a.download = `${roomName}-transcript.${format}`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 60000); // some browsers read the blob late
  });
}

function deleteRoom() {
  if (!window.confirm(`Delete /${roomName} and all its messages, for everyone? This cannot be undone.`)) return;
  ownerAction(async () => {
    await ownerApi('DELETE', '');
    forgetRoomTokens();
    location.assign('/');
  });
}

// A click outside an open menu (on the other one's button, say) or Escape closes it.
function setupMenus() {
  document.addEventListener('click', (event) => {
    for (const menu of el.menus) if (menu.open && !menu.contains(event.target)) menu.open = false;
  });
  document.addEventListener('keydown', (event) => {
    if (event.key !== 'Escape') return;
    for (const menu of el.menus) {
      if (!menu.open) continue;
      menu.open = false;
      menu.querySelector('summary').focus();
    }
  });
}

// apply(room): takes in the room as a PATCH returns it.
export function setupOwner({ apply }) {
  applyRoom = apply;
  el.present.href = `/${encodeURIComponent(roomName)}/present`;
  el.pause.addEventListener('click', () => setState('paused'));
  el.resume.addEventListener('click', () => setState('open'));
  el.close.addEventListener('click', () => {
    if (window.confirm('Close this room for good? It stays readable, but nobody can post again.')) setState('closed');
  });
  el.formats.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-format]');
    if (button) download(button.dataset.format);
  });
  el.lifetime.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-extend]');
    if (button) extend(Number(button.dataset.extend));
  });
  el.deleteRoom.addEventListener('click', deleteRoom);
  setupMenus();
}
