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
  const stored = new Map(held.map((turn) => [turn.job_id, turn]));
  list.replaceChildren(...earlier.map((turn) => earlierTurn(turn, stored.get(turn.job))));
}

function earlierTurn(turn, stored) {
  const body = h('div', { className: 'answer markdown' });
  if (stored === undefined) {
    body.append(h('p', { className: 'muted' }, 'No answer in the conversation: it was stopped, '
      + 'failed, rolled back by the next question, or has expired.'));
  } else {
    new AnswerText(body, NO_CITATIONS).finish(stored.answer);
    // Cut short by the next question (multitask "interrupt"): the answer is what it had said.
    if (stored.interrupted) {
      body.append(h('p', { className: 'muted' }, 'Interrupted by the next question.'));
    }
  }
  return h('li', { className: 'card turn', 'data-job': turn.job },
    h('h2', { className: 'question' }, turn.query), body);
}

/** A fresh conversation id: the API lets its client choose it. */
export const newConversationId = () => crypto.randomUUID().replaceAll('-', '');
