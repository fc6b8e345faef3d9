// The collections: the picker a question searches (and uploads go to), and the welcome card
// shown while no answer is on screen, with each collection's documents and a few questions
// drawn from their titles. All of it from GET /documents.

import { h } from './answer.js';
import { request } from './api.js';
import { retryWithKey } from './apikey.js';

const CHOSEN_KEY = 'rag-async:collection';
const NEW = '+ new'; // the picker's "New collection…" (a space: no collection has one)
const NAME = /^[A-Za-z0-9._-]{1,64}$/;
const EXAMPLES = 4;
const PENDING_POLL = 3000;
// Questions about a document by its title: the offline answerer answers them from the
// document so named (providers/llm/asking.py reads these shapes), an LLM from its passages.
const ASKING = [
  (title) => `What is “${title}” about?`,
  (title) => `Give me an overview of “${title}”.`,
  (title) => `What are the key points of “${title}”?`,
];
// A longer title would be cut in the question, and a cut title names no document.
const LONGEST_TITLE = 60;

/**
 * elements: { select, newName, welcome, empty, list, examplesTitle, examples };
 * onExample(question) asks it. Returns { chosen(), refresh() }: the chosen collection's name
 * ('' for the service's default) and a reload of the list (after an upload, say).
 */
export function setupCollections(elements, onExample) {
  const { select, newName } = elements;
  let known = [];
  let again = null;

  const chosen = () => {
    if (select.value === NEW) return newName.value.trim();
    return select.value;
  };
  const choose = (name) => {
    select.value = known.some((c) => c.name === name) ? name : select.options[0]?.value ?? '';
    newName.hidden = select.value !== NEW;
  };

  select.addEventListener('change', () => {
    newName.hidden = select.value !== NEW;
    if (select.value === NEW) newName.focus();
    else remember(select.value);
  });
  newName.addEventListener('change', () => {
    const name = newName.value.trim();
    newName.setCustomValidity(!name || NAME.test(name) ? ''
      : 'Letters, digits, dots, dashes and underscores only (up to 64).');
    newName.reportValidity();
  });

  const refresh = async () => {
    let documents;
    try {
      ({ documents } = await request('GET', '/documents'));
    } catch (error) {
      // The list is a convenience: without it questions go to the default collection.
      if (error.status === 401) retryWithKey('collections', refresh, error);
      return;
    }
    known = collectionsOf(documents);
    let previous = select.value || recalled();
    // A new collection that now holds documents is one of the list.
    if (previous === NEW && known.some((c) => c.name === newName.value.trim())) {
      previous = newName.value.trim();
      newName.value = '';
      remember(previous);
    }
    select.replaceChildren(...pickerOptions(known));
    if (previous === NEW) {
      select.value = NEW;
      newName.hidden = false;
    } else choose(previous);
    renderWelcome(elements, known, documents, (question, collection) => {
      choose(collection);
      remember(collection);
      onExample(question);
    });
    // Documents still being added (the demo corpus, just after `rag-async up`): look again.
    clearTimeout(again);
    if (known.some((c) => c.pending)) again = setTimeout(refresh, PENDING_POLL);
  };

  refresh();
  return { chosen, refresh };
}

/** [{ name, indexed, pending }], the biggest first; counts are of documents. */
function collectionsOf(documents) {
  const byName = new Map();
  for (const document of documents) {
    const entry = byName.get(document.collection) ?? { name: document.collection, indexed: 0, pending: 0 };
    if (document.status === 'indexed') entry.indexed += 1;
    else if (document.status === 'queued' || document.status === 'ingesting') entry.pending += 1;
    byName.set(document.collection, entry);
  }
  return [...byName.values()].sort((a, b) => b.indexed - a.indexed || a.name.localeCompare(b.name));
}

function pickerOptions(collections) {
  const options = collections.map((c) => h('option', { value: c.name }, `${c.name} (${documentsCount(c.indexed)})`));
  if (!options.length) options.push(h('option', { value: '' }, 'default'));
  options.push(h('option', { value: NEW }, 'New collection…'));
  return options;
}

function renderWelcome(elements, collections, documents, ask) {
  const { welcome, empty, list, examplesTitle, examples } = elements;
  welcome.classList.add('loaded');
  empty.hidden = collections.some((c) => c.indexed > 0);
  list.replaceChildren(...collections.map((c) => h('li', {},
    h('span', { className: 'collection-name' }, c.name), ' ',
    h('span', { className: 'muted' }, [documentsCount(c.indexed),
      c.pending ? `${c.pending} being added` : ''].filter(Boolean).join(' · ')))));
  const picked = exampleQuestions(documents);
  examplesTitle.hidden = picked.length === 0;
  examples.replaceChildren(...picked.map(({ question, collection }) => h('li', {},
    h('button', {
      type: 'button',
      className: 'example',
      onclick: () => ask(question, collection),
    }, question))));
}

/**
 * A few questions about the most recently indexed documents, one per title: only questions
 * that can be answered, so of documents with text to quote and a title the question can
 * name whole.
 */
function exampleQuestions(documents) {
  const seen = new Set();
  const picked = [];
  for (const document of documents) {
    const title = cleanTitle(document.title);
    if (document.status !== 'indexed' || !title || seen.has(title.toLowerCase())) continue;
    if (document.chunks === 0 || title.length > LONGEST_TITLE || !/\w/.test(title)) continue;
    seen.add(title.toLowerCase());
    picked.push({ question: ASKING[picked.length % ASKING.length](title), collection: document.collection });
    if (picked.length === EXAMPLES) break;
  }
  return picked;
}

/** "8. Errors and Exceptions" → "Errors and Exceptions", quotes off (the question adds its own). */
function cleanTitle(title) {
  return (title ?? '').replace(/^\s*[\d.]+\s+/, '').replace(/["“”]/g, '').replace(/\s+/g, ' ').trim();
}

export const documentsCount = (n) => `${n} document${n === 1 ? '' : 's'}`;

function recalled() {
  try {
    return localStorage.getItem(CHOSEN_KEY) ?? '';
  } catch {
    return '';
  }
}

function remember(name) {
  try {
    localStorage.setItem(CHOSEN_KEY, name);
  } catch {
    // storage disabled: the picker starts from the biggest collection next time
  }
}
