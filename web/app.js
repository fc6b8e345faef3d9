// The page: ask a question, follow its answer as it streams, reopen it after a reload.
// The job id lives in the URL (?job=<id>), so a reload or a shared link finds the answer.

import { AnswerText, ago, h } from './answer.js';
import { ApiError, followJob, getJob, request } from './api.js';
import { retryWithKey, setupKeyPanel } from './apikey.js';
import { setupStats, setupUploads } from './side.js';
import { StageLine } from './stages.js';
import { Transcript } from './transcript.js';

const $ = (id) => document.getElementById(id);
const ui = {
  form: $('ask-form'), question: $('question'), ask: $('ask-button'), alert: $('alert'),
  card: $('answer-card'), title: $('answer-question'), connection: $('connection'),
  answer: $('answer'), jobError: $('job-error'), sourcesSection: $('sources-section'),
  sources: $('sources'), providers: $('providers'), history: $('history'),
  historyEmpty: $('history-empty'), dialog: $('source-dialog'), announce: $('announce'),
};
const stages = new StageLine($('stages'));
const answer = new AnswerText(ui.answer, (n) => openSource(n));

const HISTORY_KEY = 'rag-async:history';
const PROGRESS_KEY = (jobId) => `rag-async:progress:${jobId}`;
const HISTORY_SIZE = 20;

// The job on screen: { id, eventsUrl, stop, transcript, after, sources, pollTimer }.
let job = null;

setupKeyPanel({
  button: $('key-button'), form: $('key-form'), input: $('api-key'), reveal: $('key-reveal'),
  remember: $('key-remember'), forget: $('key-forget'), message: $('key-message'),
});

// ---- asking -------------------------------------------------------------------------------

ui.form.addEventListener('submit', async (event) => {
  event.preventDefault();
  const query = ui.question.value.trim();
  if (!query) {
    showAlert('Type a question first.');
    return;
  }
  showAlert(null);
  ui.ask.disabled = true;
  ui.ask.textContent = 'Asking…';
  try {
    const accepted = await request('POST', '/chat', withCollection({ query }));
    remember(accepted.job_id, query);
    history.pushState(null, '', `?job=${encodeURIComponent(accepted.job_id)}`);
    openJob(accepted.job_id);
  } catch (error) {
    // 422 (too long, empty), 429 (busy), 503 and "unreachable" all carry their own words.
    const message = error instanceof ApiError ? error.message : String(error);
    if (error.status === 401) {
      showAlert(`${message} The question is asked once a key is entered.`);
      retryWithKey('ask', () => ui.form.requestSubmit(), error);
    } else showAlert(message);
  } finally {
    ui.ask.disabled = false;
    ui.ask.textContent = 'Ask';
  }
});

ui.question.addEventListener('keydown', (event) => {
  // Enter asks; Shift+Enter (and Enter while an input method composes) makes a new line.
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.form.requestSubmit();
  }
});

// ---- one job on screen --------------------------------------------------------------------

async function openJob(jobId) {
  closeJob();
  const current = {
    id: jobId,
    eventsUrl: null,
    stop: () => {},
    transcript: new Transcript(),
    after: 0,
    sources: [],
    pollTimer: null,
  };
  job = current;
  ui.card.hidden = false;
  ui.title.textContent = recalled(jobId)?.query ?? 'Loading…';
  ui.jobError.hidden = true;
  ui.providers.textContent = '';
  answer.reset();
  setSources([]);
  stages.reset();
  markHistory(jobId);

  let view = null;
  for (let failures = 0; !view; failures += 1) {
    try {
      view = await getJob(jobId);
    } catch (error) {
      if (job !== current) return;
      if (error.status) { // the service answered: the job is gone, the id is wrong, or a key
        ui.card.hidden = true;
        showAlert(`This answer cannot be shown: ${error.message}`);
        if (error.status === 401) {
          retryWithKey('job', () => {
            showAlert(null);
            showJobFromUrl();
          }, error);
        }
        return;
      }
      setConnection(`${error.message} Retrying…`);
      await new Promise((resolve) => { setTimeout(resolve, Math.min(10000, 500 * 2 ** failures)); });
    }
    if (job !== current) return;
  }
  setConnection('');
  current.eventsUrl = view.events_url; // with API keys, a fresh token to follow it with
  ui.title.textContent = view.query ?? '(no question)';
  if (view.query) remember(jobId, view.query);
  setSources(view.sources);
  stages.applyTimings(view.timings);

  if (view.status === 'complete' || view.status === 'failed' || view.status === 'cancelled') {
    showFinal(view);
    return;
  }
  if (view.status === 'queued') {
    stages.enter('queued', view.created_at ? Math.max(0, Date.now() / 1000 - view.created_at) : 0);
    showPosition(view);
    pollPosition(current);
    current.after = view.last_event_id;
  } else {
    stages.enter(view.stage ?? 'retrieving');
    const saved = loadProgress(jobId);
    if (saved) {
      // What this browser already showed, and the id of the last event it applied: exact.
      current.transcript = new Transcript({ attempt: saved.attempt, text: saved.text });
      current.after = saved.after;
      answer.append(saved.text);
    } else {
      // Another browser's job: show the partial answer now, then replay the log from the
      // start and rebuild the text from it. (The record's last event id and its partial text
      // are two reads, so resuming after that id could repeat a batch.)
      answer.append(view.answer ?? '');
      current.replaying = true;
    }
  }
  follow(current);
}

function follow(current) {
  current.stop = followJob(current, {
    onEvent(event, id) {
      if (job !== current) return;
      if (current.replaying) {
        current.replaying = false;
        answer.reset();
      }
      current.after = id;
      apply(current, event);
    },
    onConnection(state, error) {
      if (job !== current) return;
      if (state === 'waiting') {
        setConnection(`${error.message} The answer goes on once a key is entered.`);
      } else {
        setConnection(state === 'reconnecting'
          ? `${error ? error.message : 'The connection was interrupted.'} Reconnecting…` : '');
      }
    },
    onEnd(view, error) {
      if (job !== current) return;
      setConnection('');
      if (view) showFinal(view);
      else showJobError(`This answer is no longer available: ${error.message}`);
    },
  });
}

function apply(current, event) {
  const { transcript } = current;
  const attempt = transcript.attempt;
  if (transcript.apply(event)) {
    // A new attempt after a worker died or a call failed: its answer starts over.
    answer.reset();
    announce(`Attempt ${transcript.attempt} started; the answer starts again.`);
  }
  switch (event.type) {
    case 'status':
      // A dead attempt's sources go with it (not a first attempt's, which a reopened page
      // showed from the job's record); the new attempt sends its own.
      if (attempt > 0 && transcript.attempt > attempt) setSources([]);
      stopPolling(current);
      stages.note('queued', '');
      stages.enter(event.stage ?? (event.status === 'queued' ? 'queued' : 'retrieving'));
      break;
    case 'sources':
      setSources(event.sources);
      break;
    case 'token':
      stages.enter('generating');
      ui.answer.classList.add('streaming');
      answer.append(event.text);
      break;
    case 'done':
      answer.finish(transcript.text);
      stages.finish(event.timings);
      showProviders(event.providers);
      ui.answer.classList.remove('streaming');
      forgetProgress(current.id);
      announce('The answer is complete.');
      return;
    case 'error':
      showJobError(`The job failed: ${event.message}`);
      forgetProgress(current.id);
      return;
    case 'cancelled':
      showJobError('The job was cancelled.');
      forgetProgress(current.id);
      return;
    default:
      return;
  }
  saveProgress(current);
}

function showFinal(view) {
  stopPolling(job);
  forgetProgress(view.job_id);
  ui.answer.classList.remove('streaming');
  if (view.status === 'complete') {
    answer.finish(view.answer ?? '');
    stages.finish(view.timings);
    showProviders(view.providers);
  } else {
    if (view.answer) answer.finish(view.answer);
    // Mark the stage it ended in (a job can fail before this page saw any of its stages).
    stages.enter(stages.order.includes(view.stage) ? view.stage : 'retrieving');
    showJobError(view.status === 'failed'
      ? `The job failed: ${view.error ?? 'no reason was recorded'}`
      : 'The job was cancelled.');
  }
}

function showJobError(message) {
  answer.finish();
  ui.answer.classList.remove('streaming');
  stages.fail();
  ui.jobError.textContent = message;
  ui.jobError.hidden = false;
}

function closeJob() {
  if (!job) return;
  job.stop();
  stopPolling(job);
  job = null;
}

// While queued, the event stream is silent: poll the job for its place in the queue.
function pollPosition(current) {
  current.pollTimer = setInterval(async () => {
    try {
      const view = await getJob(current.id);
      if (job === current && view.status === 'queued') showPosition(view);
      else stopPolling(current);
    } catch {
      // the event stream reports connection trouble; nothing to add here
    }
  }, 1000);
}

function stopPolling(current) {
  if (current) clearInterval(current.pollTimer);
}

function showPosition(view) {
  const position = view.queue_position;
  stages.note('queued', typeof position === 'number' ? `#${position} in line` : '');
}

function showProviders(providers = {}) {
  const parts = Object.entries(providers).map(([role, name]) => `${role}: ${name}`);
  ui.providers.textContent = parts.length ? `Answered by ${parts.join(' · ')}` : '';
}

function setConnection(text) {
  ui.connection.textContent = text;
  ui.connection.hidden = !text;
}

function showAlert(message) {
  ui.alert.textContent = message ?? '';
  ui.alert.hidden = !message;
}

function announce(text) {
  ui.announce.textContent = text;
}

// ---- sources ------------------------------------------------------------------------------

function setSources(sources) {
  if (job) job.sources = sources;
  answer.setSources(sources);
  ui.sourcesSection.hidden = sources.length === 0;
  ui.sources.replaceChildren(...sources.map((source) => h('li', { value: source.n },
    h('button', { type: 'button', className: 'source-link', onclick: () => openSource(source.n) },
      h('span', { className: 'source-title' }, whereIn(source)),
      h('span', { className: 'source-origin' },
        [source.source, `passage ${source.chunk + 1}`].filter(Boolean).join(' · '))))));
}

/** "Title › Section (page 3)": where a passage sits (the heading path starts at the title). */
function whereIn(source) {
  const place = source.heading || source.title;
  return source.page ? `${place} (page ${source.page})` : place;
}

function openSource(n) {
  const source = job?.sources.find((s) => s.n === n);
  if (!source) return;
  $('source-title').textContent = `[${n}] ${whereIn(source)}`;
  const meta = [source.source, `passage ${source.chunk + 1}`, `relevance ${source.score.toFixed(3)}`];
  $('source-meta').textContent = meta.filter(Boolean).join(' · ');
  $('source-text').textContent = source.text;
  if (!ui.dialog.open) ui.dialog.showModal();
}

$('source-close').addEventListener('click', () => ui.dialog.close());
ui.dialog.addEventListener('click', (event) => {
  if (event.target === ui.dialog) ui.dialog.close(); // a click on the backdrop
});

// ---- this browser's memory: recent questions, and how far each running answer got --------

function recall() {
  try {
    const items = JSON.parse(localStorage.getItem(HISTORY_KEY) ?? '[]');
    return Array.isArray(items) ? items : [];
  } catch {
    return []; // a corrupt entry must not break the page
  }
}

const recalled = (jobId) => recall().find((item) => item.id === jobId);

function remember(jobId, query) {
  const items = recall().filter((item) => item.id !== jobId);
  const previous = recalled(jobId);
  items.unshift({ id: jobId, query, at: previous?.at ?? Date.now() / 1000 });
  for (const dropped of items.splice(HISTORY_SIZE)) forgetProgress(dropped.id);
  localStorage.setItem(HISTORY_KEY, JSON.stringify(items));
  renderHistory();
}

function renderHistory() {
  const items = recall();
  ui.historyEmpty.hidden = items.length > 0;
  ui.history.replaceChildren(...items.map((item) => h('li', {},
    h('a', {
      href: `?job=${encodeURIComponent(item.id)}`,
      className: 'history-item',
      'data-job': item.id,
      onclick: (event) => {
        event.preventDefault();
        history.pushState(null, '', `?job=${encodeURIComponent(item.id)}`);
        showAlert(null);
        openJob(item.id);
      },
    }, h('span', { className: 'history-query' }, item.query),
    h('span', { className: 'history-time' }, ago(item.at))))));
  markHistory(job?.id);
}

function markHistory(jobId) {
  for (const link of ui.history.querySelectorAll('a')) {
    if (link.dataset.job === jobId) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

function saveProgress(current) {
  const { attempt, text } = current.transcript;
  const progress = { after: current.after, attempt, text };
  try {
    localStorage.setItem(PROGRESS_KEY(current.id), JSON.stringify(progress));
  } catch {
    // storage full or disabled: a reload will replay the stream from the start instead
  }
}

function loadProgress(jobId) {
  try {
    const saved = JSON.parse(localStorage.getItem(PROGRESS_KEY(jobId)));
    return saved && typeof saved.text === 'string' && saved.after > 0 ? saved : null;
  } catch {
    return null;
  }
}

function forgetProgress(jobId) {
  localStorage.removeItem(PROGRESS_KEY(jobId));
}

// ---- start --------------------------------------------------------------------------------

function showJobFromUrl() {
  const jobId = new URLSearchParams(window.location.search).get('job');
  if (jobId) openJob(jobId);
  else {
    closeJob();
    ui.card.hidden = true;
  }
}

window.addEventListener('popstate', showJobFromUrl);
renderHistory();
showJobFromUrl();
setupUploads({
  dropzone: $('dropzone'), input: $('file-input'), list: $('uploads'), withCollection,
});
setupStats({
  queue: $('stat-queue'), flight: $('stat-flight'), workers: $('stat-workers'),
  failureCount: $('stat-failures'), note: $('service-note'), failures: $('failures'),
  failureList: $('failure-list'),
});

// ---- collections ----------------------------------------------------------------------------

/** The body with the chosen collection, if any (none means the service's default). */
function withCollection(body) {
  const collection = $('collection').value.trim();
  return collection ? { ...body, collection } : body;
}

/** Offer the collections that hold documents; typing a new name is fine too. */
async function loadCollections() {
  try {
    const { documents } = await request('GET', '/documents');
    const names = [...new Set(documents.map((d) => d.collection))].sort();
    $('collections').replaceChildren(...names.map((name) => h('option', { value: name })));
  } catch (error) {
    // The list is a convenience: without it the field still takes any name.
    if (error.status === 401) retryWithKey('collections', loadCollections, error);
  }
}
loadCollections();
