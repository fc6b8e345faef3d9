// This browser's memory: the conversations begun here (the recent list, each with the jobs of
// its questions in order), and how far each running answer got (so a reload
// resumes after the last event it applied, exactly).

const CONVERSATIONS_KEY = 'rag-async:conversations';
const PROGRESS_KEY = (jobId) => `rag-async:progress:${jobId}`;
const HISTORY_SIZE = 20;

/** The conversations of this browser, the latest first: [{ id, at, turns: [{ job, query }] }]. */
export function recall() {
  try {
    const items = JSON.parse(localStorage.getItem(CONVERSATIONS_KEY) ?? '[]');
    return Array.isArray(items) ? items.filter((item) => Array.isArray(item?.turns)) : [];
  } catch {
    return []; // a corrupt entry must not break the page
  }
}

/** The conversation that holds job `jobId`, if this browser asked it. */
export const conversationOf = (jobId) => recall().find(
  (item) => item.turns.some((turn) => turn.job === jobId),
);

export const recalled = (jobId) => conversationOf(jobId)?.turns.find((turn) => turn.job === jobId);

/** Add (or update) job `jobId` of conversation `id`, and put the conversation first. */
export function remember(id, jobId, query) {
  const items = recall();
  const previous = items.find((item) => item.id === id);
  const turns = previous?.turns.filter((turn) => turn.job !== jobId) ?? [];
  const index = previous?.turns.findIndex((turn) => turn.job === jobId) ?? -1;
  turns.splice(index < 0 ? turns.length : index, 0, { job: jobId, query });
  const rest = items.filter((item) => item.id !== id);
  rest.unshift({ id, at: previous?.at ?? Date.now() / 1000, turns });
  for (const dropped of rest.splice(HISTORY_SIZE)) {
    for (const turn of dropped.turns) forgetProgress(turn.job);
  }
  localStorage.setItem(CONVERSATIONS_KEY, JSON.stringify(rest));
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
