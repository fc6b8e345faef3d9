// Markdown from the API (answers and cited passages) as DOM nodes, safely.
//
// marked (web/vendor) turns the Markdown into HTML with a renderer that writes raw HTML,
// images and task checkboxes as text; DOMPurify (web/vendor) then keeps only the elements
// and attributes that renderer produces, and links only to http(s) and mailto addresses. Raw
// HTML in a document therefore shows as the text it is, an image is its alt text (the page
// fetches nothing a document names), and the page's Content-Security-Policy stays the last
// line, not the only one. Our own scripts never assign HTML: the fragment DOMPurify returns is
// merged into the page node by node (`morph`).

import { Marked } from './vendor/marked.esm.js';
import DOMPurify from './vendor/purify.es.js';

const escapeHtml = (text) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;')
  .replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');

const marked = new Marked({
  gfm: true,
  breaks: false, // a hard-wrapped line of a document is one line of its paragraph
  renderer: {
    html: ({ text, block }) => (block ? `<p>${escapeHtml(text)}</p>` : escapeHtml(text)),
    image: ({ text }) => escapeHtml(text),
    checkbox: ({ checked }) => (checked ? '☑ ' : '☐ '),
  },
});

const PURIFY = {
  ALLOWED_TAGS: [
    'p', 'br', 'hr', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'em', 'strong', 'del', 'code', 'pre',
    'blockquote', 'ul', 'ol', 'li', 'a', 'table', 'thead', 'tbody', 'tr', 'th', 'td',
  ],
  ALLOWED_ATTR: ['href', 'start', 'align'],
  ALLOWED_URI_REGEXP: /^(?:https?|mailto):/i,
  ALLOW_DATA_ATTR: false,
  RETURN_DOM_FRAGMENT: true,
};

DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.nodeName !== 'A') return;
  if (node.hasAttribute('href')) {
    // Away from the page, and without telling the other site where the reader came from.
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer nofollow');
  }
});

// Between blocks, marked writes newlines; as text nodes they would only add to textContent.
const BLOCK_PARENTS = new Set(['UL', 'OL', 'BLOCKQUOTE', 'TABLE', 'THEAD', 'TBODY', 'TR', 'LI']);

/** `text` (Markdown) as a sanitised fragment of the page's document. */
export function markdownFragment(text) {
  const fragment = DOMPurify.sanitize(marked.parse(text ?? '', { async: false }), PURIFY);
  const walker = document.createTreeWalker(fragment, NodeFilter.SHOW_TEXT);
  const blank = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const parent = node.parentNode;
    const between = parent === fragment || BLOCK_PARENTS.has(parent.nodeName);
    if (between && !node.data.trim()) blank.push(node);
  }
  for (const node of blank) node.remove();
  // A link without an address (a javascript: one, say) is plain text.
  for (const link of fragment.querySelectorAll('a:not([href])')) link.replaceWith(...link.childNodes);
  return fragment;
}

/** The words a reader sees in `text` (Markdown), its headings left out, on one line. */
export function plainText(text) {
  const blocks = [...markdownFragment(text).children].filter((block) => !/^H\d$/.test(block.tagName));
  return blocks.map((block) => block.textContent).join(' ').replace(/\s+/g, ' ').trim();
}

/**
 * Make `live`'s children look like `next`'s, touching only what differs: a streaming answer
 * grows without its earlier nodes being replaced, so nothing flickers, a selection holds and
 * a focused citation button stays the one focused. Event listeners of kept nodes stay too.
 */
export function morph(live, next) {
  const wanted = [...next.childNodes];
  wanted.forEach((node, i) => {
    const current = live.childNodes[i];
    if (!current) live.append(node);
    else if (current.isEqualNode(node)) return;
    else if (sameShape(current, node)) {
      if (current.nodeType === Node.TEXT_NODE) current.data = node.data;
      else morph(current, node);
    } else current.replaceWith(node);
  });
  while (live.childNodes.length > wanted.length) live.lastChild.remove();
}

function sameShape(a, b) {
  if (a.nodeType !== b.nodeType || a.nodeName !== b.nodeName) return false;
  if (a.nodeType !== Node.ELEMENT_NODE) return true;
  if (a.attributes.length !== b.attributes.length) return false;
  return [...b.attributes].every((attribute) => a.getAttribute(attribute.name) === attribute.value);
}

// ---- quoted sentences -----------------------------------------------------------------------

const WORD = /[\p{L}\p{N}]+/gu;
const RUN = 6; // words in a row that make a quote rather than a shared phrase
const TEXT_BLOCKS = 'p, li, h1, h2, h3, h4, h5, h6, td, th';

const words = (text) => (text.toLowerCase().match(WORD) ?? []);

/**
 * Wrap in <mark> each sentence of the rendered passage `root` that the answer quotes: all of
 * a short sentence, or any run of `RUN` of its words in a row, appears in `answer` (text).
 * Code blocks are not sentences. Returns the marks, in reading order.
 */
export function markQuoted(root, answer) {
  const said = words(answer);
  const runs = new Set();
  for (let i = 0; i + RUN <= said.length; i += 1) runs.add(said.slice(i, i + RUN).join(' '));
  const saidText = ` ${said.join(' ')} `;
  const quoted = (sentence) => {
    const own = words(sentence);
    if (own.length < 3) return false;
    if (own.length < RUN) return saidText.includes(` ${own.join(' ')} `);
    for (let i = 0; i + RUN <= own.length; i += 1) {
      if (runs.has(own.slice(i, i + RUN).join(' '))) return true;
    }
    return false;
  };
  const marks = [];
  const segmenter = new Intl.Segmenter(undefined, { granularity: 'sentence' });
  for (const [, nodes] of textByBlock(root)) {
    const text = nodes.map((node) => node.data).join('');
    const ranges = [...segmenter.segment(text)].filter(({ segment }) => quoted(segment))
      .map(({ segment, index }) => [index, index + segment.trimEnd().length]);
    // Last first: splitting a text node then leaves the offsets of earlier sentences as they were.
    const wrapped = ranges.reverse().map(([start, end]) => wrap(nodes, start, end));
    marks.push(...wrapped.reverse().flat());
  }
  return marks;
}

/** The text nodes of `root` outside code blocks, grouped by the block they read in. */
function textByBlock(root) {
  const groups = new Map();
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (node.parentElement.closest('pre')) continue;
    const block = node.parentElement.closest(TEXT_BLOCKS) ?? root;
    if (!groups.has(block)) groups.set(block, []);
    groups.get(block).push(node);
  }
  return groups;
}

/** Wrap characters [start, end) of the concatenated `nodes` in <mark>s, one per text node. */
function wrap(nodes, start, end) {
  const marks = [];
  let offset = 0;
  for (const node of nodes) {
    const length = node.data.length;
    const from = Math.max(start - offset, 0);
    const to = Math.min(end - offset, length);
    offset += length;
    if (from >= to) continue;
    const piece = from > 0 ? node.splitText(from) : node;
    if (to - from < piece.data.length) piece.splitText(to - from);
    const mark = document.createElement('mark');
    piece.replaceWith(mark);
    mark.append(piece);
    marks.push(mark);
  }
  return marks;
}
