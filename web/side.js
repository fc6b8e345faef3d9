// The side panels: uploading documents with their ingestion progress, and the service panel
// (for whoever runs it: the queue, the workers, recent failures) from GET /stats, folded
// away unless opened, with a one-line summary that always shows.

import { ApiError, followJob, request } from './api.js';
import { h } from './answer.js';
import { retryWithKey } from './apikey.js';
import { timeAgo } from './times.js';

let uploads = 0; // numbers each upload, for one that waits for an API key

/**
 * Drag-and-drop and the file picker both end here: each file is its own upload, sent as the
 * API's multipart form, so any type the API parses (text, Markdown, HTML, PDF) goes, and any
 * other is refused in the API's own words. `collection()` names where files go ('' for the
 * default); `onAdded()` runs when one is indexed.
 */
export function setupUploads({ dropzone, input, list, collection = () => '', onAdded = () => {} }) {
  const accept = (files) => {
    for (const file of files) upload(file, list, { collection, onAdded });
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

async function upload(file, list, options) {
  const progress = h('progress', { max: 1, 'aria-label': `Ingestion of ${file.name}` });
  const status = h('span', { className: 'upload-status' }, 'Uploading…');
  const row = h('li', { className: 'upload' }, h('span', { className: 'upload-name' }, file.name),
    progress, status);
  list.prepend(row);
  const fail = (message) => {
    row.classList.add('failed');
    progress.remove();
    status.textContent = message;
  };
  // The same file again (same collection, same text) is kept as it is: the ingest job says so
  // by an 'unchanged' progress event, as the CLI reports it.
  let unchanged = false;
  const added = (chunks) => {
    progress.value = progress.max;
    row.classList.add('complete');
    status.textContent = unchanged
      ? `Unchanged: ${passages(chunks ?? 0)} already indexed` : `Added: ${passages(chunks ?? 0)}`;
    options.onAdded();
  };
  let accepted;
  try {
    const form = new FormData();
    form.append('files', file, file.name);
    const collection = options.collection();
    if (collection) form.append('collection', collection);
    accepted = await request('POST', '/documents', form);
  } catch (error) {
    if (error.status === 401) {
      fail(`${error.message} The file is sent once a key is entered.`);
      uploads += 1;
      retryWithKey(`upload:${uploads}`, () => {
        row.remove();
        upload(file, list, options);
      }, error);
    } else {
      fail(error instanceof ApiError ? error.message : `Could not send the file: ${error.message}`);
    }
    return;
  }
  status.textContent = 'Queued…';
  followJob({ id: accepted.job_id, eventsUrl: accepted.events_url, after: 0 }, {
    onEvent(event) {
      if (event.type === 'status') status.textContent = `${capitalise(event.stage ?? event.status)}…`;
      else if (event.type === 'progress') {
        unchanged ||= event.stage === 'unchanged';
        progress.max = Math.max(1, event.total);
        progress.value = event.done;
        status.textContent = `${capitalise(event.stage)} ${event.done} of ${event.total}`;
      } else if (event.type === 'done') added(event.chunks);
      else if (event.type === 'error') fail(`Failed: ${event.message}`);
    },
    onConnection(state, error) {
      if (state === 'reconnecting') status.textContent = 'Reconnecting…';
      else if (state === 'waiting') status.textContent = error.message;
    },
    onEnd(view) {
      if (!view) fail('This upload is no longer known to the service.');
      else if (view.status === 'complete') added(view.chunks);
      else fail(`Failed: ${view.error ?? view.status}`);
    },
  });
}

/** "1 passage", "3 passages". */
export const passages = (n) => `${n} passage${n === 1 ? '' : 's'}`;

const capitalise = (word) => word.charAt(0).toUpperCase() + word.slice(1);

/**
 * Poll GET /stats every few seconds (paused while the tab is hidden). A key that is not an
 * admin's sees counts only (`workers_alive`, no `workers` list nor `recent_failures`): what
 * is missing is hidden, not shown as zero.
 */
export function setupStats(elements, every = 4000) {
  const { panel, queue, flight, workers, failureCount, note, failures, failureList } = elements;
  keepOpenState(panel, 'rag-async:service-open');
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
        : [typeof alive === 'number' ? `${alive} worker${alive === 1 ? '' : 's'}` : '',
          typeof stats.queue_depth === 'number' ? `${stats.queue_depth} queued` : '',
        ].filter(Boolean).join(' · ') || 'Live';
      note.title = `Updated ${new Date().toLocaleTimeString()}`;
      failures.hidden = !recent?.length;
      failureList.replaceChildren(...(recent ?? []).slice(0, 5).map((failure) => h('li', {},
        timeAgo(failure.at, 'failure-time'), ' ',
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

/** Open or fold `details` as it was last left in this browser. */
function keepOpenState(details, key) {
  try {
    details.open = localStorage.getItem(key) === 'open';
  } catch {
    // storage disabled: folded
  }
  details.addEventListener('toggle', () => {
    try {
      localStorage.setItem(key, details.open ? 'open' : 'closed');
    } catch {
      // storage disabled: it is folded again after a reload
    }
  });
}
