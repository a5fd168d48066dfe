// The two DOM helpers every room page module uses.

export const $ = (id) => document.getElementById(id);

// Shows `text` in `node`, or hides the node when there is no text.
export function showText(node, text) {
  node.textContent = text || '';
  node.hidden = !text;
}
