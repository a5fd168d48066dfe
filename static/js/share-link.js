// The share bar: the room's link and a Copy button that works without the async clipboard too.
import { $ } from './dom.js';

const el = {
  link: $('room-link'),
  copy: $('copy-link'),
  copyStatus: $('copy-status'),
};

async function copyLink() {
  const text = el.link.href;
  let ok = false;
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      ok = true;
    }
  } catch {
    ok = false;
  }
  if (!ok) {
    const area = document.createElement('textarea');
    area.value = text;
    area.readOnly = true;
    area.className = 'offscreen';
    document.body.appendChild(area);
    area.select();
    try {
      ok = document.execCommand('copy');
    } catch {
      ok = false;
    }
    area.remove();
  }
  el.copyStatus.textContent = ok ? 'Copied!' : 'Press Ctrl+C to copy';
  if (!ok) {
    const range = document.createRange();
    range.selectNodeContents(el.link);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }
  setTimeout(() => { el.copyStatus.textContent = ''; }, 2500);
}

export function setupShareBar(name) {
  el.link.href = `${location.origin}/${name}`;
  el.link.textContent = `${location.host}/${name}`;
  el.copy.addEventListener('click', copyLink);
}
