// An answer's sources: the list under it, the dialog that shows one passage (rendered, with
// the sentences the answer quoted highlighted, and how well it matched), and the preview a
// `[n]` shows on hover or focus.

import { h } from './answer.js';
import { markdownFragment, markQuoted, plainText } from './markdown.js';

const PREVIEW_CHARS = 220;

/** "Title › Section (page 3)": where a passage sits (the heading path starts at the title). */
export function whereIn(source) {
  const place = source.heading || source.title;
  return source.page ? `${place} (page ${source.page})` : place;
}

/**
 * How well a passage matched, in words a reader can weigh: its rank among this answer's
 * sources, and its score as a share of the best one's (raw scores, BM25's or fused ones,
 * mean nothing on their own).
 */
export function relevance(source, sources) {
  const scores = sources.map((s) => s.score).filter(Number.isFinite);
  const rank = 1 + scores.filter((score) => score > source.score).length;
  const best = Math.max(...scores);
  const share = best > 0 && source.score >= 0
    ? ` · ${Math.round((100 * source.score) / best)}% of the best match` : '';
  return `ranked ${rank} of ${sources.length}${share}`;
}

// "[1]" or "[1, 3]", as answer.js reads the marks.
const CITED = /\[(\d+(?:\s*,\s*\d+)*)\]/g;

/** The source numbers an answer's text cites. */
function citedIn(text) {
  const cited = new Set();
  for (const [, numbers] of (text ?? '').matchAll(CITED)) {
    for (const n of numbers.split(',')) cited.add(Number(n));
  }
  return cited;
}

/**
 * "Sources", or what they are when the finished answer `text` cites none of them ("Nothing
 * relevant to that was found …"): the closest passages, which did not support it.
 */
export function sourcesHeading(text, sources) {
  const cited = citedIn(text);
  return sources.length === 0 || sources.some((source) => cited.has(source.n)) ? 'Sources'
    : 'Closest passages (the answer cites none of them)';
}

export class SourceView {
  /**
   * elements: { section, heading, list, dialog, title, meta, quoted, text, close, preview,
   * previewTitle, previewText }; `answer` is the answer's element (what was quoted).
   */
  constructor(elements, answer) {
    this.ui = elements;
    this.answer = answer;
    this.sources = [];
    const { dialog, close } = elements;
    close.addEventListener('click', () => dialog.close());
    // Closing gives the focus back to the [n] that opened it, whose focus shows the preview:
    // the preview goes with the dialog instead (the close event comes after that focus).
    dialog.addEventListener('close', () => this.unpreview());
    dialog.addEventListener('click', (event) => {
      if (event.target === dialog) dialog.close(); // a click on the backdrop
    });
    document.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') this.unpreview();
    });
  }

  set(sources) {
    this.sources = sources;
    const { section, list, heading } = this.ui;
    section.hidden = sources.length === 0;
    heading.textContent = 'Sources';
    list.replaceChildren(...sources.map((source) => h('li', { value: source.n },
      h('button', { type: 'button', className: 'source-link', onclick: () => this.open(source.n) },
        h('span', { className: 'source-title' }, whereIn(source)),
        h('span', { className: 'source-origin' },
          [source.source, `passage ${source.chunk + 1}`].filter(Boolean).join(' · '))))));
  }

  /**
   * The answer is complete: if it cites none of its sources ("Nothing relevant to that was
   * found …"), they did not support it and the list says what they are, the closest passages.
   */
  answered(text) {
    this.ui.heading.textContent = sourcesHeading(text, this.sources);
  }

  #find(n) {
    return this.sources.find((s) => s.n === n);
  }

  open(n) {
    const source = this.#find(n);
    if (!source) return;
    const { dialog, title, meta, quoted, text } = this.ui;
    this.unpreview();
    title.textContent = `[${n}] ${whereIn(source)}`;
    meta.textContent = [source.source, `passage ${source.chunk + 1}`, relevance(source, this.sources)]
      .filter(Boolean).join(' · ');
    text.replaceChildren(markdownFragment(source.text));
    const marks = markQuoted(text, this.answer.innerText); // innerText: its blocks stay apart
    quoted.hidden = marks.length === 0;
    if (!dialog.open) dialog.showModal();
    text.scrollTop = 0;
    marks[0]?.scrollIntoView({ block: 'nearest' });
  }

  /** A short preview of source n by its citation `button`, inside the window. */
  preview(button, n) {
    const source = this.#find(n);
    const { dialog, preview, previewTitle, previewText } = this.ui;
    if (!source || dialog.open) return;
    previewTitle.textContent = `[${n}] ${whereIn(source)}`;
    const words = plainText(source.text);
    previewText.textContent = words.length > PREVIEW_CHARS
      ? `${words.slice(0, PREVIEW_CHARS).replace(/\s+\S*$/, '')}…` : words;
    preview.hidden = false;
    const place = button.getBoundingClientRect();
    const { offsetWidth: width, offsetHeight: height } = preview;
    const left = Math.min(Math.max(8, place.left), window.innerWidth - width - 8);
    const top = place.bottom + 6 + height < window.innerHeight ? place.bottom + 6 : place.top - height - 6;
    // CSSOM, which the page's policy allows (a style attribute it would not).
    preview.style.setProperty('--left', `${left + window.scrollX}px`);
    preview.style.setProperty('--top', `${top + window.scrollY}px`);
  }

  unpreview() {
    this.ui.preview.hidden = true;
  }
}
