// The side panels: uploading documents with their ingestion progress, and the live service
// figures from GET /stats.

import { ApiError, followJob, request } from './api.js';
import { ago, h } from './answer.js';
import { retryWithKey } from './apikey.js';

const TEXT_FILE = /\.(txt|md|markdown)$/i;
let uploads = 0; // numbers each upload, for one that waits for an API key

/** Drag-and-drop and the file picker both end here: each file becomes one ingestion job. */
export function setupUploads({ dropzone, input, list, withCollection = (body) => body }) {
  const accept = (files) => {
    for (const file of files) upload(file, list, withCollection);
  };
  input.addEventListener('change', () => {
    accept(input.files);
    input.value = ''; // so choosing the same file again uploads it again
  });
  for (const type of ['dragenter', 'dragover']) {
    dropzone.addEventListener(type, (event) => {
      event.preventDefault(); // without this the browser opens the file instead
      dropzone.classList.add('dragging');
    });
  }
  for (const type of ['dragleave', 'drop']) {
    dropzone.addEventListener(type, () => dropzone.classList.remove('dragging'));
  }
  dropzone.addEventListener('drop', (event) => {
    event.preventDefault();
    accept(event.dataTransfer.files);
  });
}

async function upload(file, list, withCollection) {
  const progress = h('progress', { max: 1, 'aria-label': `Ingestion of ${file.name}` });
  const status = h('span', { className: 'upload-status' }, 'Reading…');
  const row = h('li', { className: 'upload' }, h('span', { className: 'upload-name' }, file.name),
    progress, status);
  list.prepend(row);
  const fail = (message) => {
    row.classList.add('failed');
    progress.remove();
    status.textContent = message;
  };
  if (!TEXT_FILE.test(file.name)) {
    fail('Only .txt and .md files can be added.');
    return;
  }
  let accepted;
  try {
    const text = await file.text();
    status.textContent = 'Uploading…';
    const body = { text, title: titleOf(file.name, text), source: file.name };
    accepted = await request('POST', '/documents', withCollection(body));
  } catch (error) {
    if (error.status === 401) {
      fail(`${error.message} The file is sent once a key is entered.`);
      uploads += 1;
      retryWithKey(`upload:${uploads}`, () => {
        row.remove();
        upload(file, list, withCollection);
      }, error);
    } else {
      fail(error instanceof ApiError ? error.message : `Could not read the file: ${error.message}`);
    }
    return;
  }
  status.textContent = 'Queued…';
  followJob({ id: accepted.job_id, eventsUrl: accepted.events_url, after: 0 }, {
    onEvent(event) {
      if (event.type === 'status') status.textContent = `${capitalise(event.stage ?? event.status)}…`;
      else if (event.type === 'progress') {
        progress.max = Math.max(1, event.total);
        progress.value = event.done;
        status.textContent = `${capitalise(event.stage)} ${event.done} of ${event.total}`;
      } else if (event.type === 'done') {
        progress.value = progress.max;
        row.classList.add('complete');
        status.textContent = `Added: ${event.chunks ?? 0} passages`;
      } else if (event.type === 'error') fail(`Failed: ${event.message}`);
    },
    onConnection(state, error) {
      if (state === 'reconnecting') status.textContent = 'Reconnecting…';
      else if (state === 'waiting') status.textContent = error.message;
    },
    onEnd(view) {
      if (!view) fail('This upload is no longer known to the service.');
      else if (view.status === 'complete') status.textContent = `Added: ${view.chunks ?? 0} passages`;
      else fail(`Failed: ${view.error ?? view.status}`);
    },
  });
}

/** A Markdown file's first heading names it; otherwise its file name does. */
function titleOf(name, text) {
  const heading = text.match(/^#\s+(.+)$/m);
  return (heading ? heading[1] : name.replace(TEXT_FILE, '')).trim().slice(0, 200) || name;
}

const capitalise = (word) => word.charAt(0).toUpperCase() + word.slice(1);

/**
 * Poll GET /stats every few seconds (paused while the tab is hidden). A key that is not an
 * admin's sees counts only (`workers_alive`, no `workers` list nor `recent_failures`): what
 * is missing is hidden, not shown as zero.
 */
export function setupStats(elements, every = 4000) {
  const { queue, flight, workers, failureCount, note, failures, failureList } = elements;
  const failureFigure = failureCount.closest('div');
  const show = (values) => {
    queue.textContent = values.queue;
    flight.textContent = values.flight;
    workers.textContent = values.workers;
    failureCount.textContent = values.failures;
  };
  const unknown = { queue: '–', flight: '–', workers: '–', failures: '–' };

  const poll = async () => {
    if (document.hidden) return;
    try {
      const stats = await request('GET', '/stats');
      const alive = Array.isArray(stats.workers) ? stats.workers.length : stats.workers_alive;
      const recent = Array.isArray(stats.recent_failures) ? stats.recent_failures : null;
      show({
        queue: stats.queue_depth ?? '–',
        flight: stats.jobs_in_flight ?? '–',
        workers: alive ?? '–',
        failures: recent ? recent.length : '–',
      });
      failureFigure.hidden = recent === null;
      note.classList.toggle('warning', alive === 0);
      note.textContent = alive === 0
        ? 'No worker is running: questions will wait in the queue.'
        : `Live · updated ${new Date().toLocaleTimeString()}`;
      failures.hidden = !recent?.length;
      failureList.replaceChildren(...(recent ?? []).slice(0, 5).map((failure) => h('li', {},
        h('span', { className: 'failure-time' }, ago(failure.at)), ' ',
        h('code', {}, failure.job_id.slice(0, 8)), ' ', failure.error)));
    } catch (error) {
      show(unknown);
      failures.hidden = true;
      note.classList.add('warning');
      if (error.status === 401) {
        note.textContent = 'Service figures need an API key.';
        retryWithKey('stats', poll, error);
        return;
      }
      note.textContent = error.status === 404
        ? 'Service figures unavailable (this API has no /stats).'
        : error.status ? `Service figures unavailable: ${error.message}` : 'Service unreachable.';
    }
  };
  poll();
  setInterval(poll, every);
  document.addEventListener('visibilitychange', poll);
}
