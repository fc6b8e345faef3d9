// The answer so far: the one rule by which a job's events become the text to show, the same
// as /job-status's and the Python client's (rag_async/transcript.py; both are tested against
// tests/fixtures/answer_logs.json).
//
// Text belongs to the attempt that wrote it. The answer so far is the text of the `token`
// events since the `status` event that announced the highest attempt seen so far; a `status`
// of the same or a lower attempt (a stage change, or a `requeued` status repeating the
// attempt) changes nothing. A `done` event's `answer` replaces the text: it is authoritative.

export class Transcript {
  /** Fresh, or where an earlier fold stopped (the page restores what it saved). */
  constructor({ attempt = 0, text = '' } = {}) {
    this.attempt = attempt;
    this.text = text;
    this.discarded = []; // the text of each dead attempt that had any, in order
  }

  /** Take one event (its JSON); true if it dropped text of a dead attempt. */
  apply(event) {
    switch (event.type) {
      case 'status': {
        const attempt = Number(event.attempt) || 0;
        if (attempt <= this.attempt) return false;
        this.attempt = attempt;
        const dropped = this.text;
        this.text = '';
        if (dropped) this.discarded.push(dropped);
        return dropped !== '';
      }
      case 'token':
        this.text += event.text ?? '';
        return false;
      case 'done':
        if (typeof event.answer === 'string') this.text = event.answer;
        return false;
      default:
        return false;
    }
  }
}
