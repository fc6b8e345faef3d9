// The page: a conversation of questions, each answer followed as it streams, reopened after a
// reload. The job on screen lives in the URL (?job=<id>), so a reload or a shared link finds
// the answer; the conversation it belongs to, and the earlier turns, in this browser's memory.

import { AnswerText, h } from './answer.js';
import { AnswerActions } from './actions.js';
import { ApiError, followJob, getJob, request } from './api.js';
import { retryWithKey, setupKeyPanel } from './apikey.js';
import { setupCollections } from './collections.js';
import {
  conversationOf, forgetProgress, loadProgress, recall, recalled, remember as storeInHistory,
  saveProgress as storeProgress,
} from './memory.js';
import { setupStats, setupUploads } from './side.js';
import { SourceView } from './sources.js';
import { StageLine } from './stages.js';
import { startClock, timeAgo } from './times.js';
import { newConversationId, showThread } from './thread.js';
import { Transcript } from './transcript.js';

const $ = (id) => document.getElementById(id);
const ui = {
  form: $('ask-form'), question: $('question'), ask: $('ask-button'), alert: $('alert'),
  card: $('answer-card'), title: $('answer-question'), connection: $('connection'),
  answer: $('answer'), jobError: $('job-error'), providers: $('providers'),
  history: $('history'), historyEmpty: $('history-empty'), announce: $('announce'),
  welcome: $('welcome'), thread: $('thread'), newConversation: $('new-conversation'),
};
const stages = new StageLine($('stages'));
const sourceView = new SourceView({
  section: $('sources-section'), heading: $('sources-title'), list: $('sources'),
  dialog: $('source-dialog'),
  title: $('source-title'), meta: $('source-meta'), quoted: $('source-quoted'),
  text: $('source-text'), close: $('source-close'), preview: $('cite-preview'),
  previewTitle: $('cite-preview-title'), previewText: $('cite-preview-text'),
}, $('answer'));
const answer = new AnswerText(ui.answer, {
  open: (n) => sourceView.open(n),
  preview: (button, n) => sourceView.preview(button, n),
  unpreview: () => sourceView.unpreview(),
});

const actions = new AnswerActions({
  stop: $('stop-button'), copy: $('copy-button'), copySources: $('copy-sources-button'),
  note: $('action-note'),
}, announce);

// The job on screen: { id, eventsUrl, stop, transcript, after, pollTimer }.
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
    // Every question belongs to a conversation: the one on screen, or one it begins. (The
    // job on screen tells which, so two tabs keep two conversations apart.)
    const conversationId = (job && conversationOf(job.id)?.id) ?? newConversationId();
    const body = withCollection({ query, conversation_id: conversationId });
    const accepted = await request('POST', '/chat', body);
    remember(conversationId, accepted.job_id, query);
    ui.question.value = '';
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

ui.newConversation.addEventListener('click', () => {
  history.pushState(null, '', window.location.pathname);
  showJobFromUrl();
  ui.question.focus();
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
    pollTimer: null,
  };
  job = current;
  ui.card.hidden = false;
  ui.welcome.hidden = true;
  ui.title.textContent = recalled(jobId)?.query ?? 'Loading…';
  ui.jobError.hidden = true;
  ui.providers.textContent = '';
  actions.finished('');
  // A job asked elsewhere (a shared link) has none here: a follow-up begins a new one.
  const conversation = conversationOf(jobId);
  ui.newConversation.hidden = false;
  showThread(ui.thread, conversation, jobId);
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
  setSources(view.sources);

  if (view.status === 'complete' || view.status === 'failed' || view.status === 'cancelled') {
    showFinal(view);
    return;
  }
  actions.running(jobId);
  if (view.status === 'queued') {
    stages.enter('queued', view.created_at ? Math.max(0, Date.now() / 1000 - view.created_at) : 0);
    showPosition(view);
    pollPosition(current);
    current.after = view.last_event_id;
  } else {
    stages.resume({ ...view, stage: view.stage ?? 'retrieving' });
    const saved = loadProgress(jobId);
    if (saved) {
      // What this browser already showed, and the id of the last event it applied: exact.
      current.transcript = new Transcript({ attempt: saved.attempt, text: saved.text });
      current.after = saved.after;
      answer.show(saved.text);
    } else {
      // Another browser's job: show the partial answer now, then replay the log from the
      // start and rebuild the text from it. (The record's last event id and its partial text
      // are two reads, so resuming after that id could repeat a batch.)
      answer.show(view.answer ?? '');
    }
  }
  follow(current);
}

function follow(current) {
  current.stop = followJob(current, {
    onEvent(event, id) {
      if (job !== current) return;
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
    answer.show(transcript.text);
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
      answer.show(transcript.text);
      break;
    case 'done':
      answer.finish(transcript.text);
      sourceView.answered(transcript.text);
      stages.finish(event.timings);
      showProviders(event.providers);
      ui.answer.classList.remove('streaming');
      actions.finished(transcript.text);
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
  actions.finished(view.answer ?? '');
  if (view.status === 'complete') {
    answer.finish(view.answer ?? '');
    sourceView.answered(view.answer ?? '');
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
  actions.finished(answer.text);
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
  answer.setSources(sources);
  actions.setSources(sources);
  sourceView.set(sources);
}

// ---- the conversations of this browser -----------------------------------------------------

function remember(conversationId, jobId, query) {
  storeInHistory(conversationId, jobId, query);
  renderHistory();
}

/** The recent list: each conversation by its first question, opening at its latest answer. */
function renderHistory() {
  const items = recall();
  ui.historyEmpty.hidden = items.length > 0;
  ui.history.replaceChildren(...items.map((item) => {
    const latest = item.turns.at(-1).job;
    const more = item.turns.length > 1 ? ` (${item.turns.length} questions)` : '';
    return h('li', {}, h('a', {
      href: `?job=${encodeURIComponent(latest)}`,
      className: 'history-item',
      'data-conversation': item.id,
      onclick: (event) => {
        event.preventDefault();
        history.pushState(null, '', `?job=${encodeURIComponent(latest)}`);
        showAlert(null);
        openJob(latest);
      },
    }, h('span', { className: 'history-query' }, item.turns[0].query + more),
    timeAgo(item.at, 'history-time')));
  }));
  markHistory(job?.id);
}

function markHistory(jobId) {
  const current = jobId ? conversationOf(jobId)?.id : null;
  for (const link of ui.history.querySelectorAll('a')) {
    if (link.dataset.conversation === current) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

function saveProgress(current) {
  storeProgress(current.id, current.after, current.transcript);
}

// ---- start --------------------------------------------------------------------------------

function showJobFromUrl() {
  const jobId = new URLSearchParams(window.location.search).get('job');
  if (jobId) openJob(jobId);
  else { // the bare page: a new conversation (the recent list reopens the earlier ones)
    closeJob();
    actions.finished('');
    ui.thread.replaceChildren();
    ui.newConversation.hidden = true;
    ui.card.hidden = true;
    ui.welcome.hidden = false;
  }
}

const collections = setupCollections({
  select: $('collection'), newName: $('collection-new'), welcome: ui.welcome,
  empty: $('welcome-empty'), list: $('collection-list'), examplesTitle: $('examples-title'),
  examples: $('examples'),
}, (question) => {
  ui.question.value = question;
  ui.form.requestSubmit();
});

/** The body with the chosen collection, if any (none means the service's default). */
function withCollection(body) {
  const collection = collections.chosen();
  return collection ? { ...body, collection } : body;
}

window.addEventListener('popstate', showJobFromUrl);
renderHistory();
showJobFromUrl();
startClock();
setupUploads({
  dropzone: $('dropzone'), input: $('file-input'), list: $('uploads'),
  collection: collections.chosen, onAdded: collections.refresh,
});
setupStats({
  panel: $('service'), queue: $('stat-queue'), flight: $('stat-flight'),
  workers: $('stat-workers'), failureCount: $('stat-failures'), note: $('service-note'),
  failures: $('failures'), failureList: $('failure-list'),
});
