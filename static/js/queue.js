// The owner's approval queue: posts held for approval (the room is `pre`, or they matched the
// restricted words), live from the owner's socket. Approve, edit then approve, or reject.
import { ApiError } from './api.js';
import { $ } from './dom.js';
import { ownerAction, ownerApi } from './owner.js';
import { formatTime } from './render.js';
import { session } from './room-session.js';

const el = {
  section: $('queue'),
  count: $('queue-count'),
  list: $('queue-list'),
  empty: $('queue-empty'),
};

const items = new Map(); // held id -> {held, li}

function part(tagName, className, text) {
  const node = document.createElement(tagName);
  node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(action, text, className = 'small') {
  const b = part('button', className, text);
  b.type = 'button';
  b.dataset.action = action;
  return b;
}

function heldItem(held) {
  const li = part('li', 'held');
  li.dataset.id = held.id;
  const meta = part('p', 'meta');
  meta.appendChild(part('span', 'author', typeof held.author === 'string' ? held.author : ''));
  if (held.question) meta.appendChild(part('span', 'tag tag-question', 'question'));
  if (held.reason === 'restricted') {
    const matched = Array.isArray(held.matched) ? held.matched.filter((w) => typeof w === 'string') : [];
    meta.appendChild(part('span', 'tag tag-restricted',
                          matched.length ? `matched: ${matched.join(', ')}` : 'restricted words'));
  }
  const time = part('time', 'time', formatTime(held.created_at).short);
  if (typeof held.created_at === 'string') time.dateTime = held.created_at;
  meta.appendChild(time);
  li.appendChild(meta);
  li.appendChild(part('p', 'body', typeof held.body === 'string' ? held.body : ''));

  const editor = part('div', 'held-edit');
  editor.hidden = true;
  const label = part('label', 'visually-hidden', 'Edited text');
  const area = part('textarea', 'held-text');
  area.id = `held-text-${held.id}`;
  label.htmlFor = area.id;
  area.rows = 2;
  editor.append(label, area);
  li.appendChild(editor);

  const actions = part('div', 'held-actions');
  actions.append(button('approve', 'Approve', 'small primary'), button('edit', 'Edit'),
                 button('reject', 'Reject', 'small danger'));
  li.appendChild(actions);
  return li;
}

function update() {
  el.count.textContent = String(items.size);
  const pre = Boolean(session.room && session.room.moderation === 'pre');
  el.section.hidden = !session.owner || session.stopped || (items.size === 0 && !pre);
  el.empty.hidden = items.size > 0;
}

// A post joined the queue (a `held` frame, or the queue as loaded).
export function addHeld(held) {
  if (!held || typeof held.id !== 'string' || items.has(held.id)) return;
  const li = heldItem(held);
  items.set(held.id, { held, li });
  el.list.appendChild(li);
  update();
}

// A held post left the queue (a `released` frame, or our own decision).
export function removeHeld(id) {
  const item = items.get(id);
  if (!item) return;
  item.li.remove();
  items.delete(id);
  update();
}

export function clearQueue() {
  for (const id of [...items.keys()]) removeHeld(id);
}

// The queue as it stands (at start and after reconnecting: frames missed meanwhile are not resent).
export async function loadQueue() {
  if (!session.owner) {
    update();
    return;
  }
  await ownerAction(async () => {
    const result = await ownerApi('GET', '/held');
    const held = (result && result.held) || [];
    const ids = new Set(held.map((h) => h.id));
    for (const id of [...items.keys()]) if (!ids.has(id)) removeHeld(id);
    for (const h of held) addHeld(h);
    update();
  });
}

export const updateQueue = update;

function toggleEdit(li, editing) {
  const editor = li.querySelector('.held-edit');
  const area = li.querySelector('textarea');
  const { held } = items.get(li.dataset.id);
  editor.hidden = !editing;
  li.querySelector('.body').hidden = editing;
  li.querySelector('[data-action=approve]').textContent = editing ? 'Approve edited' : 'Approve';
  const edit = li.querySelector('[data-action=edit], [data-action=cancel]');
  edit.dataset.action = editing ? 'cancel' : 'edit';
  edit.textContent = editing ? 'Cancel' : 'Edit';
  if (editing) {
    area.value = held.body;
    area.focus();
  }
}

function decide(li, action) {
  const id = li.dataset.id;
  const { held } = items.get(id);
  const path = `/held/${encodeURIComponent(id)}`;
  return ownerAction(async () => {
    for (const b of li.querySelectorAll('button')) b.disabled = true;
    try {
      if (action === 'reject') {
        await ownerApi('DELETE', path);
      } else {
        const editor = li.querySelector('.held-edit');
        const text = li.querySelector('textarea').value.trim();
        const edited = !editor.hidden && text !== held.body;
        await ownerApi('POST', `${path}/approve`, edited ? { body: text } : undefined);
      }
      removeHeld(id);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) throw err;
      removeHeld(id); // decided already (in another tab, say)
    } finally {
      for (const b of li.querySelectorAll('button')) b.disabled = false;
    }
  });
}

export function setupQueue() {
  el.list.addEventListener('click', (event) => {
    const b = event.target.closest('button[data-action]');
    if (!b) return;
    const li = b.closest('li.held');
    if (!items.has(li.dataset.id)) return;
    const action = b.dataset.action;
    if (action === 'edit' || action === 'cancel') toggleEdit(li, action === 'edit');
    else decide(li, action);
  });
  update();
}
