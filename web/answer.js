// Rendering text from the API. Everything here builds nodes with createElement and text
// nodes: answer and document text is data, and data never becomes markup.

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
 * The answer as it streams: text appended batch by batch, `[n]` marks turned into buttons
 * that open source n. Only the new text is rendered on each batch, so streaming stays cheap
 * and a focused citation button is never replaced under the user.
 */
export class AnswerText {
  constructor(element, onCite) {
    this.element = element;
    this.onCite = onCite;
    this.sources = new Map();
    this.reset();
  }

  reset() {
    this.raw = '';
    this.rendered = 0;
    this.element.replaceChildren();
  }

  /** Sources may arrive after text (a resumed job): re-render so its marks become links. */
  setSources(sources) {
    this.sources = new Map(sources.map((source) => [source.n, source]));
    const text = this.raw;
    this.reset();
    this.append(text);
  }

  append(text) {
    this.raw += text;
    this.#render(false);
  }

  /** The job is over: show everything, including a trailing "[" that was held back. */
  finish(finalText) {
    if (typeof finalText === 'string' && finalText !== this.raw) {
      // The final answer is authoritative (e.g. the stream was joined late).
      this.reset();
      this.raw = finalText;
    }
    this.#render(true);
  }

  #render(final) {
    let end = this.raw.length;
    if (!final) {
      const pending = PARTIAL_CITATION.exec(this.raw.slice(this.rendered));
      if (pending) end = this.rendered + pending.index;
    }
    const chunk = this.raw.slice(this.rendered, end);
    this.rendered = end;
    let last = 0;
    for (const match of chunk.matchAll(CITATION)) {
      this.element.append(chunk.slice(last, match.index), ...this.#citation(match));
      last = match.index + match[0].length;
    }
    this.element.append(chunk.slice(last));
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
    return h('button', {
      type: 'button',
      className: 'cite',
      'aria-label': `Source ${n}: ${source.title}`,
      onclick: () => this.onCite(n),
    }, label);
  }
}

/** "230 ms" or "1.4 s". */
export function formatSeconds(seconds) {
  if (seconds === undefined || seconds === null || Number.isNaN(seconds)) return '';
  return seconds < 1 ? `${Math.round(seconds * 1000)} ms` : `${seconds.toFixed(1)} s`;
}

/** "just now", "42 s ago", "3 min ago" for a unix time in seconds. */
export function ago(unixSeconds) {
  const seconds = Math.max(0, Date.now() / 1000 - unixSeconds);
  if (seconds < 2) return 'just now';
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}
