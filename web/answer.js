// Rendering answers. Elements are built with createElement and text nodes; Markdown goes
// through web/markdown.js (marked, then DOMPurify), never through an HTML sink of ours.

import { markdownFragment, morph } from './markdown.js';

export { ago, formatSeconds } from './times.js';

/** createElement with properties and children (strings become text nodes, never HTML). */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key.startsWith('on')) element.addEventListener(key.slice(2), value);
    else if (key in element && !key.startsWith('aria') && !key.startsWith('data')) {
      element[key] = value;
    } else element.setAttribute(key, value);
  }
  element.append(...children.filter((child) => child !== null && child !== undefined));
  return element;
}

// "[1]" or "[1, 3]": the citation marks the prompt asks the LLM for.
const CITATION = /\[(\d+(?:\s*,\s*\d+)*)\]/g;
// A citation that may still be arriving ("[", "[1", "[1, "): held back until it is whole, so
// a mark split across two token batches still becomes a link.
const PARTIAL_CITATION = /\[[\d,\s]{0,12}$/;

/**
 * The answer on screen: Markdown, with `[n]` marks as buttons that open source n. It shows
 * the text it is given (the answer so far, as web/transcript.js folds it); each update is
 * merged into what is on screen (markdown.js `morph`), so streaming does not flicker and a
 * focused citation button is never replaced under the user.
 */
export class AnswerText {
  /** `cite` is { open(n), preview(button, n), unpreview() }. */
  constructor(element, cite) {
    this.element = element;
    this.cite = cite;
    this.sources = new Map();
    this.reset();
  }

  reset() {
    this.text = '';
    this.final = false;
    this.element.replaceChildren();
  }

  /** Sources may arrive after text (a resumed job): render again so its marks become links. */
  setSources(sources) {
    this.sources = new Map(sources.map((source) => [source.n, source]));
    this.#render();
  }

  /** Show `text`, the answer so far; a trailing citation that may be cut is held back. */
  show(text) {
    this.text = text ?? '';
    this.final = false;
    this.#render();
  }

  /** The job is over: show everything (the final answer, if given, is authoritative). */
  finish(finalText) {
    if (typeof finalText === 'string') this.text = finalText;
    this.final = true;
    this.#render();
  }

  #render() {
    let text = this.text;
    if (!this.final) {
      const pending = PARTIAL_CITATION.exec(text);
      if (pending) text = text.slice(0, pending.index);
    }
    const fragment = markdownFragment(text);
    this.#linkCitations(fragment);
    morph(this.element, fragment);
  }

  /** Turn the citation marks of the fragment's prose (not of its code) into buttons. */
  #linkCitations(fragment) {
    const walker = document.createTreeWalker(fragment, NodeFilter.SHOW_TEXT);
    const found = [];
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      if (!node.parentElement?.closest('code, pre, a') && CITATION.test(node.data)) found.push(node);
      CITATION.lastIndex = 0;
    }
    for (const node of found) {
      const parts = [];
      let last = 0;
      for (const match of node.data.matchAll(CITATION)) {
        parts.push(node.data.slice(last, match.index), ...this.#citation(match));
        last = match.index + match[0].length;
      }
      parts.push(node.data.slice(last));
      node.replaceWith(...parts.filter((part) => part !== ''));
    }
  }

  #citation(match) {
    const numbers = match[1].split(',').map((part) => Number(part.trim()));
    if (!numbers.every((n) => this.sources.has(n))) return [match[0]]; // not a known source
    if (numbers.length === 1) return [this.#button(numbers[0], match[0])];
    // "[1, 3]": keep the text exactly as written, with each number a link of its own.
    const nodes = ['['];
    match[1].split(',').forEach((part, i) => {
      if (i) nodes.push(',');
      const lead = part.match(/^\s*/)[0];
      nodes.push(lead, this.#button(numbers[i], part.trim()), part.slice(lead.length + part.trim().length));
    });
    nodes.push(']');
    return nodes;
  }

  #button(n, label) {
    const source = this.sources.get(n);
    const { open, preview, unpreview } = this.cite;
    const show = (event) => preview(event.currentTarget, n);
    return h('button', {
      type: 'button',
      className: 'cite',
      'data-n': String(n),
      'aria-label': `Source ${n}: ${source.title}`,
      'aria-describedby': 'cite-preview',
      onclick: () => open(n),
      onmouseenter: show,
      onfocus: show,
      onmouseleave: unpreview,
      onblur: unpreview,
    }, label);
  }
}
