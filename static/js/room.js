// Room page entry: loads the room, runs its live connection and hands each server frame to the module it concerns.
import { api, ApiError, NAME_RE, roomPath } from './api.js';
import {
  acknowledge, clearPostError, failPending, noteLiveMessage, setupComposer, showServerError, updateComposer,
} from './composer.js';
import { confirmParticipant, forgetParticipant, savedParticipant, setupIdentity } from './identity.js';
import { LiveConnection, roomLiveUrl, roomRefusal } from './live.js';
import {
  addLiveMessage, clearMessages, removeMessage, resumePoint, setupMessageList, welcome,
} from './message-list.js';
import { loadPeople, setupModeration } from './moderation.js';
import { dropOwner, savedOwner, setupOwner, updateOwnerBar } from './owner.js';
import { addPending, clearPending, loadPending, releasePending } from './pending.js';
import {
  applyUpdated, clearQuestions, forgetMessage, loadQuestions, loadVotes, noteMessage, roomChanged,
  setupQuestions,
} from './questions.js';
import { addHeld, clearQueue, loadQueue, removeHeld, setupQueue, updateQueue } from './queue.js';
import { forgetRoomTokens, liveToken, roomName, session } from './room-session.js';
import {
  setConnState, setNotice, setupRoomView, showNotFound, showOnline, showRoom, updatePanels,
} from './room-view.js';
import { setupSettings, updateSettings } from './settings.js';
import { setupShareBar } from './share-link.js';

let live = null;

// Takes in a room description from the API, a welcome or a room frame.
function applyRoom(room) {
  if (!room || typeof room !== 'object') return;
  const previous = session.room;
  session.room = { ...(previous || {}), ...room };
  if (previous && previous.state !== session.room.state) clearPostError();
  showRoom();
  updateComposer();
  updateOwnerBar();
  updateSettings();
  updateQueue();
  roomChanged();
  if (previous && !previous.qa && session.room.qa) loadQuestions();
}

// The room under this name is not the one we were following (deleted and made again): start over.
function startOver() {
  clearMessages({ startOver: true });
  clearQuestions();
  clearPending();
  clearQueue();
}

function liveUrl(transport) {
  return roomLiveUrl(roomName, transport, {
    since: resumePoint(), roomId: session.room && session.room.id, token: liveToken(),
  });
}

function onFrame(frame) {
  switch (frame.type) {
    case 'welcome': {
      const renewed = Boolean(frame.new_room);
      if (renewed) startOver();
      welcome(frame.room);
      applyRoom(frame.room);
      if (session.me && liveToken() === session.me.token) confirmParticipant(frame.you);
      // What changed while we were away: frames about held posts are not resent.
      loadQueue();
      loadPending();
      if (renewed) loadQuestions();
      break;
    }
    case 'message': {
      const message = frame.message || {};
      if (addLiveMessage(message)) {
        noteLiveMessage(message);
        noteMessage(message);
      }
      break;
    }
    case 'updated':
      applyUpdated(frame.message);
      break;
    case 'deleted':
      removeMessage(frame.seq);
      forgetMessage(frame.seq);
      break;
    case 'pending':
      addPending(frame.held);
      break;
    case 'held':
      addHeld(frame.held);
      break;
    case 'released':
      removeHeld(frame.id);
      releasePending(frame.id, frame.outcome);
      break;
    case 'room':
      applyRoom(frame.room);
      break;
    case 'presence':
      if (typeof frame.online === 'number') showOnline(frame.online);
      break;
    case 'ack':
      acknowledge(frame.ref);
      break;
    case 'error':
      showServerError(frame);
      break;
    default:
      break;
  }
}

function onClose(code, reason, usedToken) {
  failPending('The connection dropped before the server confirmed your message. '
              + 'It may have been posted; check before sending again.');
  if (code === 4404) {
    session.stopped = true;
    forgetRoomTokens();
    clearMessages();
    clearQuestions();
    clearQueue();
    clearPending();
    showOnline(0);
    setNotice('This room was deleted by its owner: its messages are gone, and nobody can post here any more.', 'error');
    updatePanels();
    updateOwnerBar();
    return 'stop';
  }
  if (code === 1008) {
    if (usedToken && session.owner && usedToken === session.owner.token) {
      dropOwner();
      return 'now';
    }
    if (usedToken) {
      forgetParticipant('Your nickname’s session is no longer valid. Please join again.');
      return 'now';
    }
    if (session.room && session.room.has_password) {
      setNotice('This room has a password. Join with it to read and post.', 'info');
    } else {
      setNotice(`The server refused the live connection${reason ? ` (${reason})` : ''}. Reload to try again.`, 'error');
    }
    return 'stop';
  }
  return 'retry';
}

async function main() {
  if (!NAME_RE.test(roomName)) {
    showNotFound();
    return;
  }
  if (location.pathname !== '/' + roomName) history.replaceState(null, '', '/' + roomName + location.search);
  setupRoomView();
  setupShareBar(roomName);
  session.me = savedParticipant();
  session.owner = savedOwner();
  setupOwner({ apply: applyRoom });
  setupSettings({ apply: applyRoom });
  setupModeration();
  setupQueue();
  setupQuestions();
  setupIdentity({
    restart: () => {
      live.restart();
      loadVotes();
    },
  });
  setupComposer({
    socket: () => live,
    onSessionExpired: () => forgetParticipant('Your session has expired. Please join again.'),
  });
  setupMessageList();
  updateComposer();

  try {
    applyRoom(await api('GET', roomPath(roomName)));
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      forgetRoomTokens();
      showNotFound();
      return;
    }
    setNotice(`Could not load the room: ${err.message}`, 'error');
  }

  live = new LiveConnection({
    url: liveUrl,
    onFrame,
    onClose,
    refusal: roomRefusal(roomName),
    onState: (connState) => {
      setConnState(connState);
      updateComposer();
    },
  });
  live.start();
  loadPeople(); // the owner's mute buttons on messages need to know who is muted
  loadQuestions();
}

main();
