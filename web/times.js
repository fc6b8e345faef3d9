// Durations and times as people read them. Relative times ("42 s ago") are <time> elements
// that a shared clock keeps current, without rebuilding the lists they sit in.

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
  if (seconds < 129600) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

/** A <time> saying how long ago `unixSeconds` was, kept current by the clock below. */
export function timeAgo(unixSeconds, className) {
  const element = document.createElement('time');
  if (className) element.className = className;
  element.dateTime = new Date(unixSeconds * 1000).toISOString();
  element.dataset.at = String(unixSeconds);
  element.title = new Date(unixSeconds * 1000).toLocaleString();
  element.textContent = ago(unixSeconds);
  return element;
}

/** Bring every relative time on the page up to date. */
export function refreshTimes(root = document) {
  for (const element of root.querySelectorAll('time[data-at]')) {
    const text = ago(Number(element.dataset.at));
    if (element.textContent !== text) element.textContent = text;
  }
}

let clock = null;

/** Refresh relative times every `every` ms (once per page, whoever asks first). */
export function startClock(every = 5000) {
  clock ??= setInterval(() => refreshTimes(), every);
}
