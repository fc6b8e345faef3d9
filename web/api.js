// Talking to the API: JSON requests whose failures are sentences a person can read, and a
// job's event stream that resumes after any interruption without losing or repeating events.

import {
  currentKey, forgetRetry, keyRefused, keyVersion, refusal, retryWithKey,
} from './apikey.js';

const TERMINAL_STATUSES = new Set(['complete', 'failed', 'cancelled']);
const TERMINAL_EVENTS = new Set(['done', 'error', 'cancelled']);
const EVENT_TYPES = ['status', 'sources', 'token', 'progress', 'done', 'error', 'cancelled'];

export const UNREACHABLE = 'The service cannot be reached. Check that it is running and that '
  + 'you are online.';

export class ApiError extends Error {
  constructor(message, status = 0, code = 'unreachable', keyVersion = 0) {
    super(message);
    this.status = status;
    this.code = code;
    this.keyVersion = keyVersion; // which key the request went with (apikey.js)
  }
}

/**
 * A JSON request (or a multipart one, for a FormData body), with the API key (if one is kept) in its Authorization header; throws
 * ApiError with the API's own message ({"error": {"message"}}). A 401 also opens the key
 * field, and its message says whether a key is missing or was refused.
 */
export async function request(method, path, body) {
  const key = currentKey();
  const sentVersion = keyVersion();
  const form = body instanceof FormData; // multipart: the browser writes its Content-Type
  const headers = body === undefined || form ? {} : { 'Content-Type': 'application/json' };
  if (key) headers.Authorization = `Bearer ${key}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined || form ? body : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch {
    throw new ApiError(UNREACHABLE, 0, 'unreachable', sentVersion); // no HTTP answer came back
  }
  if (response.status === 401) {
    keyRefused(sentVersion, Boolean(key));
    throw new ApiError(refusal(Boolean(key)), 401, 'unauthorized', sentVersion);
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
    throw new ApiError(message, response.status, data?.error?.code ?? 'http_error', sentVersion);
  }
  return data;
}

export const getJob = (jobId) => request('GET', `/jobs/${encodeURIComponent(jobId)}`);

let following = 0; // numbers each followJob, for what waits for a key

/**
 * Follow a job's events after event id `after`, until its final event, from its `eventsUrl`
 * as the API gave it (POST /chat, POST /documents, GET /jobs/{id}): with API keys it carries
 * a signed token that lets EventSource in, which cannot send the key.
 *
 * EventSource reconnects by itself, but blindly (it cannot tell a finished job from a
 * dropped connection, nor an expired token from a server that is down, and retries a dead
 * server forever at a fixed pace). So we close it on any error, ask the job what it is, and
 * reconnect ourselves with backoff to the fresh events_url that answer carries (a new token),
 * passing our own last id as `?last_event_id=` (EventSource cannot set headers on its first
 * request).
 *
 * handlers: onEvent(event, id), onConnection(state, error?) with state 'live',
 * 'reconnecting' or 'waiting' (for an API key), onEnd(view) when the job is over and every
 * event has been seen. Returns a function that stops following.
 */
export function followJob({ id: jobId, eventsUrl, after }, {
  onEvent, onConnection = () => {}, onEnd = () => {},
}) {
  let source = null;
  let timer = null;
  let stopped = false;
  let failures = 0;
  let url = eventsUrl;
  following += 1;
  const waitsAs = `follow:${following}`;

  const stop = () => {
    stopped = true;
    clearTimeout(timer);
    source?.close();
    forgetRetry(waitsAs);
  };

  const open = () => {
    if (stopped) return;
    const target = new URL(url, window.location.href);
    target.searchParams.set('last_event_id', String(after));
    source = new EventSource(target.href);
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
  // connection, a stream whose life was capped, a token that expired (401), or a server
  // that is down.
  const recover = async () => {
    if (stopped) return;
    let problem = null;
    try {
      const view = await getJob(jobId);
      url = view.events_url ?? url;
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
      if (error.status === 401 && !stopped) { // nothing to retry until a key is entered
        onConnection('waiting', error);
        retryWithKey(waitsAs, recover, error);
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
