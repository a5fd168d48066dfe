// What the room page modules share: the room's name, the room as last described, and who we are.
import { store, ownerKey, participantKey } from './api.js';

export const roomName = decodeURIComponent(location.pathname.split('/').filter(Boolean)[0] || '').toLowerCase();

export const session = {
  room: null, // the room as the server last described it
  me: null, // {token, nickname, id} once joined
  owner: null, // {token, muted: Set of participant ids} when this browser created the room
  stopped: false, // the room is gone or the server refused us for good
  voted: new Set(), // seqs of the questions we vote for
};

// The token of the live connection: the owner's when this browser owns the room (the queue
// arrives live on it and it posts as the host), else ours as a participant.
export function liveToken() {
  if (session.owner) return session.owner.token;
  return session.me ? session.me.token : null;
}

// The token to read the room with over HTTP (a password room wants one).
export function readToken() {
  if (session.me) return session.me.token;
  return session.owner ? session.owner.token : null;
}

// A chat message posted under our nickname.
export function isOwnMessage(message) {
  return session.me !== null && message.kind === 'chat' && !message.host
    && String(message.author).toLowerCase() === session.me.nickname.toLowerCase();
}

// The room no longer exists: forget the participant and owner tokens this browser kept for it.
export function forgetRoomTokens() {
  store.remove(participantKey(roomName));
  store.remove(ownerKey(roomName));
}
