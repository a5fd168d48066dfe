// Our own posts that wait for the owner's approval, shown below the messages to us alone. They
// leave when the owner decides: approved, the message itself arrives; rejected, we are told.
import { api, roomPath } from './api.js';
import { $ } from './dom.js';
import { roomName, session } from './room-session.js';

const el = { list: $('pending-list') };

const items = new Map(); // held id -> <li>

const REASONS = {
  moderation: 'Waiting for the owner’s approval',
  restricted: 'Held for the owner to review',
};

function note(className, text) {
  const p = document.createElement('p');
  p.className = className;
  p.textContent = text;
  return p;
}

// Shows a held post of ours (from an HTTP answer, a `pending` frame or the queue at start).
export function addPending(held) {
  if (!held || typeof held.id !== 'string' || items.has(held.id)) return;
  const li = document.createElement('li');
  li.className = 'message pending';
  li.dataset.held = held.id;
  li.appendChild(note('meta pending-note', (REASONS[held.reason] || REASONS.moderation)
    + (held.question ? ' · question' : '')));
  li.appendChild(note('body', typeof held.body === 'string' ? held.body : ''));
  el.list.appendChild(li);
  items.set(held.id, li);
  li.scrollIntoView({ block: 'nearest' });
}

// A held post left the queue. Approved: its message is in the list now. Rejected: say so,
// with a button to put the notice away.
export function releasePending(id, outcome) {
  const li = items.get(id);
  if (!li) return;
  if (outcome !== 'rejected') {
    li.remove();
    items.delete(id);
    return;
  }
  li.classList.add('rejected');
  li.querySelector('.pending-note').textContent = 'The owner did not approve this.';
  const dismiss = document.createElement('button');
  dismiss.type = 'button';
  dismiss.className = 'link-button';
  dismiss.textContent = 'dismiss';
  dismiss.addEventListener('click', () => {
    li.remove();
    items.delete(id);
  });
  li.querySelector('.pending-note').append(' ', dismiss);
}

export function clearPending() {
  for (const li of items.values()) li.remove();
  items.clear();
}

// Our posts still held (after a reload or a reconnection, which do not resend what we missed);
// only a participant has any.
export async function loadPending() {
  if (!session.me) return;
  try {
    const result = await api('GET', `${roomPath(roomName)}/held`, { token: session.me.token });
    const held = (result && result.held) || [];
    const ids = new Set(held.map((h) => h.id));
    for (const [id, li] of items) {
      if (!ids.has(id) && !li.classList.contains('rejected')) {
        li.remove();
        items.delete(id);
      }
    }
    for (const h of held) addPending(h);
  } catch {
    // Nothing held, as far as we can tell: the queue shows again when the next post is held.
  }
}
