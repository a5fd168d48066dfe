// The owner's room tools: lock, questions and votes, pre-approval, the host's name, restricted
// words, and participation statistics.
import { fetchBlob, roomPath } from './api.js';
import { $, showText } from './dom.js';
import { ownerAction, ownerApi, ownerStatus } from './owner.js';
import { roomName, session } from './room-session.js';

const el = {
  lock: $('owner-lock'),
  unlock: $('owner-unlock'),
  settings: $('settings-menu'),
  qa: $('setting-qa'),
  pre: $('setting-pre'),
  hostForm: $('host-form'),
  hostName: $('host-name'),
  wordsForm: $('words-form'),
  wordsFields: $('words-fields'),
  words: $('words'),
  wordsAction: $('words-action'),
  wordsLists: $('words-lists'),
  wordsStatus: $('words-status'),
  stats: $('stats-menu'),
  statsSummary: $('stats-summary'),
  statsBody: $('stats-body'),
  statsCsv: $('stats-csv'),
};

let applyRoom = () => {};

function patchRoom(change) {
  return ownerAction(async () => applyRoom(await ownerApi('PATCH', '', change)));
}

// Shows the room's settings as the server last described them.
export function updateSettings() {
  const r = session.room;
  if (!session.owner || !r) return;
  el.lock.hidden = Boolean(r.locked) || r.state === 'closed';
  el.unlock.hidden = !r.locked || r.state === 'closed';
  el.qa.checked = Boolean(r.qa);
  el.pre.checked = r.moderation === 'pre';
  if (document.activeElement !== el.hostName) el.hostName.value = r.host_name || '';
}

function showWords(restricted) {
  el.words.value = (restricted.words || []).join('\n');
  el.wordsAction.value = restricted.action === 'refuse' ? 'refuse' : 'hold';
  const using = new Set(restricted.lists || []);
  el.wordsLists.replaceChildren(...(restricted.available_lists || []).map((name) => {
    const label = document.createElement('label');
    label.className = 'check';
    const box = document.createElement('input');
    box.type = 'checkbox';
    box.value = name;
    box.checked = using.has(name);
    label.append(box, ` Also the built-in “${name}” list`);
    return label;
  }));
}

// The words as they stand; the form stays disabled until they are shown, so nothing typed is lost.
async function loadWords() {
  el.wordsFields.disabled = true;
  await ownerAction(async () => {
    showWords(await ownerApi('GET', '/restricted-words'));
    el.wordsFields.disabled = false;
  });
}

function saveWords(event) {
  event.preventDefault();
  const words = el.words.value.split('\n').map((w) => w.trim()).filter(Boolean);
  const lists = [...el.wordsLists.querySelectorAll('input:checked')].map((box) => box.value);
  showText(el.wordsStatus, '');
  return ownerAction(async () => {
    showWords(await ownerApi('PUT', '/restricted-words', { words, action: el.wordsAction.value, lists }));
    showText(el.wordsStatus, 'Saved.');
  });
}

function cell(text, header = false) {
  const td = document.createElement(header ? 'th' : 'td');
  if (header) td.scope = 'row';
  td.textContent = String(text);
  return td;
}

async function loadStats() {
  await ownerAction(async () => {
    const stats = await ownerApi('GET', '/stats?format=json');
    const n = (value) => (Number.isInteger(value) ? value : 0);
    el.statsSummary.textContent = `${n(stats.messages)} messages, ${n(stats.questions)} questions,`
      + ` ${n(stats.votes)} votes, ${n(stats.host_messages)} host posts, ${n(stats.held)} waiting;`
      + ` ${n(stats.online)} online now, ${n(stats.peak_online)} at the most.`;
    el.statsBody.replaceChildren(...(stats.participants || []).map((p) => {
      const tr = document.createElement('tr');
      tr.append(cell(p.nickname, true), cell(n(p.messages)), cell(n(p.questions)), cell(n(p.votes)));
      return tr;
    }));
  });
}

function downloadStats() {
  return ownerAction(async () => {
    const blob = await fetchBlob(`${roomPath(roomName)}/stats?format=csv`, { token: session.owner.token });
    const url = URL.createObjectURL(blob);
    const a = document.createElement('a');
    a.href = url;
    a.download = `${roomName}-stats.csv`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  });
}

// apply(room): takes in the room as a PATCH returns it.
export function setupSettings({ apply }) {
  applyRoom = apply;
  el.lock.addEventListener('click', () => patchRoom({ locked: true }));
  el.unlock.addEventListener('click', () => patchRoom({ locked: false }));
  el.qa.addEventListener('change', () => patchRoom({ qa: el.qa.checked }));
  el.pre.addEventListener('change', () => patchRoom({ moderation: el.pre.checked ? 'pre' : 'none' }));
  el.hostForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const name = el.hostName.value.trim();
    if (!name) {
      ownerStatus('Give the host a name.', 'error');
      return;
    }
    patchRoom({ host_name: name });
  });
  el.wordsForm.addEventListener('submit', saveWords);
  el.settings.addEventListener('toggle', () => {
    if (el.settings.open) loadWords();
  });
  el.stats.addEventListener('toggle', () => {
    if (el.stats.open) loadStats();
  });
  el.statsCsv.addEventListener('click', downloadStats);
}
