// This browser's memory: the questions asked here (the history), and how far each running
// answer got (so a reload resumes after the last event it applied, exactly).

const HISTORY_KEY = 'rag-async:history';
const PROGRESS_KEY = (jobId) => `rag-async:progress:${jobId}`;
const HISTORY_SIZE = 20;

/** The questions asked in this browser, the latest first: [{ id, query, at }]. */
export function recall() {
  try {
    const items = JSON.parse(localStorage.getItem(HISTORY_KEY) ?? '[]');
    return Array.isArray(items) ? items : [];
  } catch {
    return []; // a corrupt entry must not break the page
  }
}

export const recalled = (jobId) => recall().find((item) => item.id === jobId);

/** Put job `jobId` first in the history (keeping when it was first asked). */
export function remember(jobId, query) {
  const items = recall().filter((item) => item.id !== jobId);
  const previous = recalled(jobId);
  items.unshift({ id: jobId, query, at: previous?.at ?? Date.now() / 1000 });
  for (const dropped of items.splice(HISTORY_SIZE)) forgetProgress(dropped.id);
  localStorage.setItem(HISTORY_KEY, JSON.stringify(items));
}

/** What the page showed of a running answer: the last event id applied, and the fold. */
export function saveProgress(jobId, after, { attempt, text }) {
  try {
    localStorage.setItem(PROGRESS_KEY(jobId), JSON.stringify({ after, attempt, text }));
  } catch {
    // storage full or disabled: a reload will replay the stream from the start instead
  }
}

export function loadProgress(jobId) {
  try {
    const saved = JSON.parse(localStorage.getItem(PROGRESS_KEY(jobId)));
    return saved && typeof saved.text === 'string' && saved.after > 0 ? saved : null;
  } catch {
    return null;
  }
}

export function forgetProgress(jobId) {
  localStorage.removeItem(PROGRESS_KEY(jobId));
}
