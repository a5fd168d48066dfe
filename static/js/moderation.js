// The owner's moderation: the list of people with mute and unmute, and the buttons on each message
// (pin it, mark a question answered, delete it, mute its author). Every nickname goes into the page as text.
import { $ } from './dom.js';
import { refreshMessages, removeMessage } from './message-list.js';
import { ownerAction, ownerApi, ownerStatus } from './owner.js';
import { applyUpdated, forgetMessage } from './questions.js';
import { session } from './room-session.js';

const el = {
  menu: $('people-menu'),
  list: $('people-list'),
  empty: $('people-empty'),
  lists: [$('messages'), $('questions')],
};

let people = []; // [{id, nickname, muted}] as the server last listed them

function tag(text) {
  const span = document.createElement('span');
  span.className = 'tag tag-' + text;
  span.textContent = text;
  return span;
}

// One person in the list, with a button to mute or unmute them (not for ourselves).
function personItem(person) {
  const li = document.createElement('li');
  li.className = 'person';
  const name = document.createElement('span');
  name.className = 'person-name';
  name.textContent = person.nickname;
  li.appendChild(name);
  if (session.me && person.id === session.me.id) {
    li.appendChild(tag('you'));
    return li;
  }
  if (person.muted) li.appendChild(tag('muted'));
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'small';
  button.dataset.id = person.id;
  button.dataset.action = person.muted ? 'unmute' : 'mute';
  button.textContent = person.muted ? 'Unmute' : 'Mute';
  li.appendChild(button);
  return li;
}

function showPeople() {
  el.list.replaceChildren(...people.map(personItem));
  el.empty.hidden = people.length > 0;
}

// Asks who joined, and who of them is muted (the mute buttons on messages follow it).
export async function loadPeople() {
  if (!session.owner) return;
  await ownerAction(async () => {
    const result = await ownerApi('GET', '/participants');
    people = ((result && result.participants) || []).filter((p) => p && typeof p.id === 'string');
    session.owner.muted = new Set(people.filter((p) => p.muted).map((p) => p.id));
    showPeople();
    refreshMessages();
  });
}

function setMuted(id, muted, nickname) {
  return ownerAction(async () => {
    await ownerApi(muted ? 'POST' : 'DELETE', `/participants/${encodeURIComponent(id)}/mute`);
    if (muted) session.owner.muted.add(id);
    else session.owner.muted.delete(id);
    for (const person of people) if (person.id === id) person.muted = muted;
    showPeople();
    refreshMessages();
    ownerStatus(muted ? `${nickname} is muted: they can read, but not post.` : `${nickname} can post again.`);
  });
}

function deleteMessage(li) {
  const author = li.querySelector('.author').textContent;
  const seq = Number(li.dataset.seq);
  if (!window.confirm(`Delete this message${author ? ` by ${author}` : ''} for everyone?`)) return;
  ownerAction(async () => {
    await ownerApi('DELETE', `/messages/${seq}`);
    removeMessage(seq);
    forgetMessage(seq);
  });
}

// Pin or unpin a message, or mark a question answered or not: `change` is {pinned} or {answered}.
function changeMessage(seq, change) {
  return ownerAction(async () => applyUpdated(await ownerApi('PATCH', `/messages/${seq}`, change)));
}

const CHANGES = {
  pin: { pinned: true },
  unpin: { pinned: false },
  answer: { answered: true },
  unanswer: { answered: false },
};

export function setupModeration() {
  el.menu.addEventListener('toggle', () => {
    if (el.menu.open) loadPeople();
  });
  el.list.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-action]');
    if (!button) return;
    const person = people.find((p) => p.id === button.dataset.id);
    if (person) setMuted(person.id, button.dataset.action === 'mute', person.nickname);
  });
  const onClick = (event) => {
    const button = event.target.closest('button.message-action');
    if (!button || !session.owner) return;
    const li = button.closest('li.message');
    const action = button.dataset.action;
    if (action === 'delete') deleteMessage(li);
    else if (CHANGES[action]) changeMessage(Number(li.dataset.seq), CHANGES[action]);
    else setMuted(li.dataset.participant, action === 'mute', li.querySelector('.author').textContent);
  };
  for (const list of el.lists) list.addEventListener('click', onClick);
}
