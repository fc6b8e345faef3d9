// The stage line: queued → (embedding →) retrieving → generating → done, with the time each
// stage took. Times are measured here while we watch, and replaced by the worker's own
// timings (the `done` event's `timings`) when the job ends. A job reopened mid-way (a
// reload) takes them from its record instead: the worker's timings of the stages it has
// passed, and when it was created and started.

import { h } from './answer.js';
import { formatSeconds } from './times.js';

const LABELS = {
  queued: 'Queued', embedding: 'Embedding', retrieving: 'Retrieving',
  generating: 'Generating', done: 'Done',
};
// Which entry of the worker's `timings` measures each stage.
const TIMING_OF = {
  queued: 'queue_wait', embedding: 'embedding', retrieving: 'retrieval',
  generating: 'generation', done: 'total',
};

export class StageLine {
  constructor(list) {
    this.list = list;
    this.ticker = null;
    this.reset();
  }

  reset() {
    this.order = ['queued', 'retrieving', 'generating', 'done'];
    this.current = null;
    this.began = {};
    this.took = {};
    this.notes = {};
    this.failed = false;
    this.#tick(false);
    this.render();
  }

  /** Enter a stage; `secondsAgo` backdates its start (a job reopened mid-stage). */
  enter(stage, secondsAgo = 0) {
    if (!(stage in LABELS) || stage === this.current) return;
    if (stage === 'embedding' && !this.order.includes('embedding')) this.order.splice(1, 0, 'embedding');
    const now = performance.now();
    // A stage ends when a later one begins. Going back (the log replayed from its start after
    // a reopened job resumed mid-way, or a new attempt) ends nothing: the stage it leaves
    // keeps its clock.
    const back = this.order.indexOf(stage) < this.order.indexOf(this.current);
    if (!back && this.current && this.took[this.current] === undefined
        && this.began[this.current] !== undefined) {
      this.took[this.current] = (now - this.began[this.current]) / 1000;
    }
    this.current = stage;
    this.began[stage] ??= now - secondsAgo * 1000;
    this.#tick(stage !== 'done');
    this.render();
  }

  /** Worker-measured times for the stages they cover. */
  applyTimings(timings = {}) {
    for (const [stage, key] of Object.entries(TIMING_OF)) {
      if (typeof timings[key] === 'number') this.took[stage] = timings[key];
    }
    this.render();
  }

  /**
   * A running job as its record tells it (GET /jobs/{id}): the queue's wait from its times,
   * the stages already passed from the worker's timings, and the current stage's clock from
   * the end of the last of them, so a reload keeps every duration instead of restarting.
   */
  resume({ stage, timings = {}, created_at: created, started_at: started }) {
    if (!(stage in LABELS)) return;
    if ((stage === 'embedding' || 'embedding' in timings) && !this.order.includes('embedding')) {
      this.order.splice(1, 0, 'embedding');
    }
    if (created && started) this.took.queued = Math.max(0, started - created);
    this.applyTimings(timings);
    let began = started;
    for (const passed of this.order.slice(1, this.order.indexOf(stage))) {
      began += this.took[passed] ?? 0;
    }
    this.enter(stage, began ? Math.max(0, Date.now() / 1000 - began) : 0);
  }

  note(stage, text) {
    this.notes[stage] = text;
    this.render();
  }

  finish(timings) {
    this.enter('done');
    this.applyTimings(timings);
  }

  fail() {
    this.failed = true;
    this.#tick(false);
    this.render();
  }

  render() {
    const at = this.order.indexOf(this.current);
    this.list.replaceChildren(...this.order.map((stage, i) => {
      let state = 'pending';
      if (i < at || (i === at && stage === 'done')) state = 'complete';
      else if (i === at) state = this.failed ? 'failed' : 'active';
      let seconds = this.took[stage];
      if (seconds === undefined && state === 'active' && this.began[stage] !== undefined) {
        seconds = (performance.now() - this.began[stage]) / 1000; // running clock
      }
      if (stage === 'done' && state !== 'complete') seconds = undefined;
      const parts = [h('span', { className: 'stage-name' }, LABELS[stage])];
      if (this.notes[stage] && state === 'active') parts.push(h('span', { className: 'stage-note' }, this.notes[stage]));
      if (seconds !== undefined) parts.push(h('span', { className: 'stage-time' }, formatSeconds(seconds)));
      return h('li', {
        className: `stage ${state}`,
        'aria-current': state === 'active' ? 'step' : 'false',
        'data-stage': stage,
      }, ...parts);
    }));
  }

  #tick(on) {
    clearInterval(this.ticker);
    this.ticker = on ? setInterval(() => this.render(), 250) : null;
  }
}
