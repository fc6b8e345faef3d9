// The earlier turns of the conversation on screen, above the answer being shown: each
// question with its answer as the conversation holds it (GET /conversations/{id}). Their
// citation marks stay plain text: the sources buttons belong to the answer below.

import { AnswerText, h } from './answer.js';
import { request } from './api.js';

const NO_CITATIONS = { open() {}, preview() {}, unpreview() {} };
let shown = 0; // numbers each showThread, so that a slower, older one does not overwrite

/** Show, in `list`, the turns of `conversation` (memory.js) asked before job `jobId`. */
export async function showThread(list, conversation, jobId) {
  shown += 1;
  const mine = shown;
  const turns = conversation?.turns ?? [];
  const index = turns.findIndex((turn) => turn.job === jobId);
  const earlier = turns.slice(0, index < 0 ? turns.length : index);
  if (!earlier.length) {
    list.replaceChildren();
    return;
  }
  let held = [];
  try {
    held = (await request('GET', `/conversations/${encodeURIComponent(conversation.id)}`)).turns;
  } catch {
    // expired, or the service is away: the questions alone still show the thread
  }
  if (mine !== shown) return;
  const answers = new Map(held.map((turn) => [turn.job_id, turn.answer]));
  list.replaceChildren(...earlier.map((turn) => earlierTurn(turn, answers.get(turn.job))));
}

function earlierTurn(turn, answerText) {
  const body = h('div', { className: 'answer markdown' });
  if (answerText === undefined) {
    body.append(h('p', { className: 'muted' }, 'No answer in the conversation: it was stopped, '
      + 'failed or unfinished when the next question was asked, or has expired.'));
  } else new AnswerText(body, NO_CITATIONS).finish(answerText);
  return h('li', { className: 'card turn', 'data-job': turn.job },
    h('h2', { className: 'question' }, turn.query), body);
}

/** A fresh conversation id: the API lets its client choose it. */
export const newConversationId = () => crypto.randomUUID().replaceAll('-', '');
