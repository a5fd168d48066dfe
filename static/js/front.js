// Front page: create a room, go to a room, list the rooms this browser owns.
import { api, ApiError, NAME_RE, store, ownerKey } from './api.js';

const RESERVED = new Set(['api', 'static', 'ws', 'metrics', 'healthz', 'replay', 'favicon.ico',
                          'robots.txt']);

const $ = (id) => document.getElementById(id);

function slugify(text) {
  return text
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+/, '')
    .slice(0, 63)
    .replace(/-+$/, '');
}

// Returns a human explanation of what is wrong with `name`, or '' when it looks fine.
function nameProblem(name) {
  if (!name) return 'Pick a name for the room: it becomes the room’s address.';
  if (name.length < 2) return 'Room names need at least 2 characters.';
  if (name.length > 63) return 'Room names can have at most 63 characters.';
  if (!/^[a-z0-9]/.test(name)) return 'Start the name with a letter or a digit.';
  if (!NAME_RE.test(name)) return 'Use only lower-case letters (a–z), digits and dashes.';
  if (RESERVED.has(name)) return `“${name}” is reserved; pick another name.`;
  return '';
}

function showError(el, message) {
  el.textContent = message;
  el.hidden = !message;
}

function setupCreate() {
  const form = $('create-form');
  const nameInput = $('room-name');
  const titleInput = $('room-title');
  const lifetime = $('room-lifetime');
  const password = $('room-password');
  const hint = $('name-hint');
  const error = $('create-error');
  const submit = $('create-submit');
  const defaultHint = hint.textContent;
  let nameEdited = false;

  const preview = $('name-preview');
  const previewUrl = $('name-preview-url');

  function checkName({ final = false } = {}) {
    const problem = nameInput.value ? nameProblem(nameInput.value) : (final ? nameProblem('') : '');
    hint.textContent = problem || defaultHint;
    hint.classList.toggle('bad', Boolean(problem));
    previewUrl.textContent = `${location.host}/${nameInput.value}`;
    preview.hidden = Boolean(problem) || !nameInput.value;
    nameInput.setAttribute('aria-invalid', problem ? 'true' : 'false');
    return !problem;
  }

  nameInput.addEventListener('input', () => {
    // Names are case-insensitive and stored lower-case: show them the way they will be stored.
    const lowered = nameInput.value.toLowerCase().replace(/\s+/g, '-');
    if (lowered !== nameInput.value) {
      const pos = nameInput.selectionStart;
      nameInput.value = lowered;
      nameInput.setSelectionRange(pos, pos);
    }
    nameEdited = nameInput.value !== '';
    showError(error, '');
    checkName();
  });

  titleInput.addEventListener('input', () => {
    showError(error, '');
    if (!nameEdited) {
      nameInput.value = slugify(titleInput.value);
      checkName();
    }
  });

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    showError(error, '');
    const name = nameInput.value.trim().toLowerCase();
    nameInput.value = name;
    if (!checkName({ final: true })) {
      showError(error, nameProblem(name));
      nameInput.focus();
      return;
    }
    const body = { name, lifetime: parseInt(lifetime.value, 10) };
    const title = titleInput.value.trim();
    if (title) body.title = title;
    if (password.value) body.password = password.value;
    if ($('room-qa').checked) body.qa = true;
    if ($('room-pre').checked) body.moderation = 'pre';
    submit.disabled = true;
    submit.textContent = 'Creating…';
    try {
      const result = await api('POST', '/api/v1/rooms', { body });
      const room = (result && result.room) || { name };
      if (result && result.owner_token) store.setString(ownerKey(room.name), result.owner_token);
      location.assign('/' + encodeURIComponent(room.name));
    } catch (err) {
      let message = err instanceof ApiError ? err.message : 'Something went wrong. Please try again.';
      if (err instanceof ApiError && err.code === 'name_taken') {
        message = `${err.message} Try another name, or go to /${name} if it is yours.`;
      }
      showError(error, message);
      if (err instanceof ApiError && (err.code === 'name_taken' || err.code === 'invalid_name')) {
        nameInput.focus();
        nameInput.select();
      }
      submit.disabled = false;
      submit.textContent = 'Create room';
    }
  });
}

// Accepts a bare name, "/name" or a full link to a room on any host.
function roomFromInput(text) {
  let value = text.trim();
  if (!value) return '';
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) {
    try {
      value = new URL(value).pathname;
    } catch {
      return value.toLowerCase();
    }
  }
  const parts = value.split('/').filter(Boolean);
  return (parts.length ? parts[parts.length - 1] : value).toLowerCase();
}

function setupGoto() {
  const form = $('goto-form');
  const input = $('goto-name');
  const error = $('goto-error');
  input.addEventListener('input', () => showError(error, ''));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const name = roomFromInput(input.value);
    if (!name || nameProblem(name)) {
      showError(error, name ? 'That does not look like a room name or link.' : 'Type a room name or paste its link.');
      input.focus();
      return;
    }
    location.assign('/' + encodeURIComponent(name));
  });
}

function listMyRooms() {
  const names = store.keys('tmd:owner:').map((key) => key.slice('tmd:owner:'.length))
    .filter((name) => NAME_RE.test(name)).sort();
  if (!names.length) return;
  const list = $('my-rooms');
  for (const name of names) {
    const li = document.createElement('li');
    const a = document.createElement('a');
    a.href = '/' + encodeURIComponent(name);
    a.textContent = '/' + name;
    li.appendChild(a);
    list.appendChild(li);
  }
  $('my-rooms-card').hidden = false;
}

setupCreate();
setupGoto();
listMyRooms();
