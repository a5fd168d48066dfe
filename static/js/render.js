// Message rendering. Every string from the server or other users goes into the page through
// textContent, createTextNode or attribute setters, never as HTML; links are http(s) only.

const URL_RE = /\bhttps?:\/\/[^\s<>"'`]+/gi;
const TRAILING = /[.,;:!?*'"\]}>]+$/;

const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'medium' });

// Returns a URL object when `text` is an absolute http or https URL, otherwise null.
export function safeHttpUrl(text) {
  if (typeof text !== 'string') return null;
  let url;
  try {
    url = new URL(text);
  } catch {
    return null;
  }
  return url.protocol === 'http:' || url.protocol === 'https:' ? url : null;
}

function externalLink(href, text) {
  const a = document.createElement('a');
  a.href = href;
  a.target = '_blank';
  a.rel = 'noopener noreferrer nofollow';
  a.textContent = text;
  return a;
}

// Drop punctuation that usually ends a sentence rather than the URL, and a closing parenthesis
// that has no opening partner inside the URL (as in "(see https://example.org/x)").
function trimUrl(candidate) {
  let url = candidate;
  for (;;) {
    const before = url;
    url = url.replace(TRAILING, '');
    if (url.endsWith(')')) {
      const opens = url.split('(').length - 1;
      const closes = url.split(')').length - 1;
      if (closes > opens) url = url.slice(0, -1);
    }
    if (url === before) return url;
  }
}

// Appends `text` to `parent` as text nodes, with http(s) URLs turned into links.
export function appendLinkified(parent, text) {
  let last = 0;
  URL_RE.lastIndex = 0;
  for (let match = URL_RE.exec(text); match !== null; match = URL_RE.exec(text)) {
    const raw = trimUrl(match[0]);
    const url = safeHttpUrl(raw);
    if (!url) continue;
    if (match.index > last) parent.appendChild(document.createTextNode(text.slice(last, match.index)));
    parent.appendChild(externalLink(url.href, raw));
    last = match.index + raw.length;
    URL_RE.lastIndex = last;
  }
  if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
}

export function formatTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return { short: '', full: '' };
  const pad = (n) => String(n).padStart(2, '0');
  return { short: `${pad(date.getHours())}:${pad(date.getMinutes())}`, full: fullFormat.format(date) };
}

function span(className, text) {
  const el = document.createElement('span');
  el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

function actionButton(action, text, title) {
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'link-button message-action';
  button.dataset.action = action;
  button.textContent = text;
  button.title = title;
  return button;
}

// The owner's buttons on a message: pin it, mark a question answered, delete it, and mute or
// unmute its author. `muted` is true or false for a chat message by someone else, null when
// there is no one to mute.
export function messageActions(message, muted) {
  const actions = span('message-actions');
  if (message.kind !== 'system') {
    actions.appendChild(message.pinned
      ? actionButton('unpin', 'unpin', 'Stop showing this as the one now discussed')
      : actionButton('pin', 'pin', 'Show this to everyone as the one now discussed'));
  }
  if (message.question) {
    actions.appendChild(message.answered
      ? actionButton('unanswer', 'reopen', 'Mark this question as not answered yet')
      : actionButton('answer', 'answered', 'Mark this question answered'));
  }
  actions.appendChild(actionButton('delete', 'delete', 'Delete this message for everyone'));
  if (muted !== null) {
    actions.appendChild(muted
      ? actionButton('unmute', 'unmute', 'Let this person post again')
      : actionButton('mute', 'mute', 'Stop this person from posting'));
  }
  return actions;
}

export function votesLabel(count) {
  return count === 1 ? '1 vote' : `${count} votes`;
}

// A question's vote button: pressed when we vote for it; disabled when we cannot vote.
export function voteButton(message, { voted = false, canVote = false } = {}) {
  const votes = Number.isInteger(message.votes) ? message.votes : 0;
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'vote';
  button.dataset.action = voted ? 'unvote' : 'vote';
  button.setAttribute('aria-pressed', String(voted));
  button.disabled = !canVote;
  button.title = canVote ? (voted ? 'Take your vote back' : 'Vote for this question')
    : 'Join the room to vote';
  button.setAttribute('aria-label', `${votesLabel(votes)}. ${button.title}`);
  button.appendChild(span('vote-arrow', '▲'));
  button.appendChild(span('vote-count', String(votes)));
  return button;
}

function tag(name, text) {
  return span('tag tag-' + name, text);
}

// The tags after the author: host, question, answered, edited, pinned.
function appendTags(meta, message) {
  if (message.host) meta.appendChild(tag('host', 'host'));
  if (message.question) meta.appendChild(tag('question', 'question'));
  if (message.answered) meta.appendChild(tag('answered', 'answered'));
  if (message.pinned) meta.appendChild(tag('pinned', 'now discussing'));
  if (message.edited) {
    const edited = tag('edited', 'edited');
    edited.title = 'The owner edited this before approving it';
    meta.appendChild(edited);
  }
}

// Builds the <li> for one message. `me` is the current nickname (or null); `vote` is for a
// question's vote button ({voted, canVote}).
export function renderMessage(message, { me = null, vote = {} } = {}) {
  const kind = ['chat', 'social', 'system'].includes(message.kind) ? message.kind : 'chat';
  const li = document.createElement('li');
  li.className = 'message kind-' + kind;
  li.dataset.seq = String(message.seq);
  if (typeof message.participant_id === 'string') li.dataset.participant = message.participant_id;

  const author = typeof message.author === 'string' ? message.author : '';
  if (kind === 'chat' && !message.host && me && author.toLowerCase() === me.toLowerCase()) {
    li.classList.add('mine');
  }
  for (const flag of ['host', 'question', 'answered', 'pinned']) {
    if (message[flag]) li.classList.add(flag);
  }

  const meta = document.createElement('div');
  meta.className = 'meta';
  meta.appendChild(span('author', kind === 'system' && !author ? 'tmd' : author));
  appendTags(meta, message);

  if (kind === 'social' && message.source && typeof message.source === 'object') {
    const network = typeof message.source.network === 'string' ? message.source.network : 'social';
    const url = safeHttpUrl(message.source.url);
    const via = span('source');
    via.appendChild(document.createTextNode('via '));
    if (url) via.appendChild(externalLink(url.href, network));
    else via.appendChild(document.createTextNode(network));
    meta.appendChild(via);
  }

  const time = document.createElement('time');
  time.className = 'time';
  const { short, full } = formatTime(message.created_at);
  time.textContent = short;
  if (typeof message.created_at === 'string') {
    time.dateTime = message.created_at;
    time.title = full ? `${full} (#${message.seq})` : message.created_at;
  }
  meta.appendChild(time);

  li.appendChild(meta);

  const body = document.createElement('div');
  body.className = 'body';
  appendLinkified(body, typeof message.body === 'string' ? message.body : '');
  li.appendChild(body);
  if (message.question) li.prepend(voteButton(message, vote));
  return li;
}
