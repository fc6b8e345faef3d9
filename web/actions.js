// What one can do with the answer on screen: stop it while it runs (DELETE /jobs/{id}), and
// copy it once it is there, with or without the list of its sources.

import { request } from './api.js';
import { sourcesHeading } from './sources.js';

export class AnswerActions {
  /** elements: { stop, copy, copySources, note }; `say` announces to screen readers. */
  constructor(elements, say) {
    this.ui = elements;
    this.say = say;
    this.jobId = null;
    this.text = '';
    this.sources = [];
    elements.stop.addEventListener('click', () => this.#stop());
    elements.copy.addEventListener('click', () => this.#copy(false));
    elements.copySources.addEventListener('click', () => this.#copy(true));
    this.finished('');
  }

  /** Job `jobId` is queued or running: it may be stopped, not yet copied. */
  running(jobId) {
    this.jobId = jobId;
    this.#show({ stop: true, copy: false });
  }

  /** The job is over: its answer (if any) may be copied. */
  finished(text, sources = this.sources) {
    this.text = text ?? '';
    this.sources = sources;
    this.#show({ stop: false, copy: this.text.trim() !== '' });
  }

  setSources(sources) {
    this.sources = sources ?? [];
  }

  #show({ stop, copy }) {
    this.ui.stop.hidden = !stop;
    this.ui.stop.disabled = false;
    this.ui.copy.hidden = !copy;
    this.ui.copySources.hidden = !copy || this.sources.length === 0;
    this.ui.note.textContent = '';
  }

  async #stop() {
    this.ui.stop.disabled = true;
    try {
      await request('DELETE', `/jobs/${encodeURIComponent(this.jobId)}`);
      this.ui.note.textContent = 'Stopping…'; // the stream's "cancelled" event ends it
    } catch (error) {
      this.ui.stop.disabled = false;
      this.ui.note.textContent = `Could not stop it: ${error.message}`;
    }
  }

  async #copy(withSources) {
    const lines = this.sources.map((source) => `[${source.n}] ${source.title}`
      + (source.source ? ` (${source.source})` : ''));
    const heading = sourcesHeading(this.text, this.sources);
    const text = withSources ? `${this.text}\n\n${heading}:\n${lines.join('\n')}\n` : this.text;
    try {
      await navigator.clipboard.writeText(text);
      this.ui.note.textContent = 'Copied.';
    } catch {
      this.ui.note.textContent = 'This browser did not allow copying.';
    }
    this.say(this.ui.note.textContent);
  }
}
