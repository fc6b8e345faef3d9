// Talking to the API: JSON requests whose failures are sentences a person can read, and a
// job's event stream that resumes after any interruption without losing or repeating events.

const TERMINAL_STATUSES = new Set(['complete', 'failed', 'cancelled']);
const TERMINAL_EVENTS = new Set(['done', 'error', 'cancelled']);
const EVENT_TYPES = ['status', 'sources', 'token', 'progress', 'done', 'error', 'cancelled'];

export const UNREACHABLE = 'The service cannot be reached. Check that it is running and that '
  + 'you are online.';

export class ApiError extends Error {
  constructor(message, status = 0, code = 'unreachable') {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** A JSON request; throws ApiError with the API's own message ({"error": {"message"}}). */
export async function request(method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch {
    throw new ApiError(UNREACHABLE); // fetch only rejects when no HTTP answer came back
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    // not JSON (a proxy's error page, say): the status code is all we can report
  }
  if (!response.ok) {
    const message = data?.error?.message
      ?? `The service answered with HTTP ${response.status} ${response.statusText}.`.trim();
    throw new ApiError(message, response.status, data?.error?.code ?? 'http_error');
  }
  return data;
}

export const getJob = (jobId) => request('GET', `/jobs/${encodeURIComponent(jobId)}`);

/**
 * Follow a job's events after event id `after`, until its final event.
 *
 * EventSource reconnects by itself, but blindly (it cannot tell a finished job from a
 * dropped connection, and retries a dead server forever at a fixed pace). So we close it on
 * any error, ask the job what it is, and reconnect ourselves with backoff, passing our own
 * last id as `?last_event_id=` (EventSource cannot set headers on its first request).
 *
 * handlers: onEvent(event, id), onConnection(state, error?) with state 'live' or
 * 'reconnecting', onEnd(view) when the job is over and every event has been seen.
 * Returns a function that stops following.
 */
export function followJob(jobId, after, { onEvent, onConnection = () => {}, onEnd = () => {} }) {
  let source = null;
  let timer = null;
  let stopped = false;
  let failures = 0;

  const stop = () => {
    stopped = true;
    clearTimeout(timer);
    source?.close();
  };

  const open = () => {
    if (stopped) return;
    const url = `/jobs/${encodeURIComponent(jobId)}/events?last_event_id=${after}`;
    source = new EventSource(url);
    source.addEventListener('open', () => {
      failures = 0;
      onConnection('live');
    });
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (message) => {
        // The job's own `error` event and a connection error share the name "error"; only
        // the job's carries data.
        if (!(message instanceof MessageEvent) || typeof message.data !== 'string') return;
        const id = Number(message.lastEventId);
        if (stopped || !(id > after)) return; // never apply an event twice
        after = id;
        const event = JSON.parse(message.data);
        onEvent(event, id);
        if (TERMINAL_EVENTS.has(event.type)) stop();
      });
    }
    source.onerror = (event) => {
      if (event instanceof MessageEvent || stopped) return;
      source.close();
      recover();
    };
  };

  // The stream ended without a final event: a 204 (we already have everything), a dropped
  // connection, a stream whose life was capped, or a server that is down.
  const recover = async () => {
    let problem = null;
    try {
      const view = await getJob(jobId);
      if (TERMINAL_STATUSES.has(view.status) && after >= view.last_event_id) {
        stop();
        onEnd(view);
        return;
      }
    } catch (error) {
      if (error.status === 404) {
        stop();
        onEnd(null, error);
        return;
      }
      problem = error;
    }
    if (stopped) return;
    onConnection('reconnecting', problem);
    const delay = Math.min(15000, 300 * 2 ** failures) * (0.75 + Math.random() / 2);
    failures += 1;
    timer = setTimeout(open, delay);
  };

  open();
  return stop;
}
