// The API key: where this browser keeps it, the field that takes it, and the work that waits
// for it. An API with keys answers 401 to a request without a good one; the field then shows,
// and what was refused runs again once a key is entered.
//
// The key only ever travels in the Authorization header, never in a URL (it would end up in
// server logs and the browser's history). EventSource, which cannot send a header, follows a
// job with the signed, short-lived token of the job's events_url instead.

const STORAGE_KEY = 'rag-async:api-key';
// What fetch accepts in a header value; a key is a secret of printable ASCII.
const PRINTABLE = /^[\x20-\x7e]+$/;

let version = 0; // bumped whenever the key changes, so a late 401 for an older key is told apart
const waiting = new Map(); // a name -> what runs again once a key is entered
let panel = null; // the field, once setupKeyPanel has run

/** The key to send, or '' (remembered in localStorage, or for this tab in sessionStorage). */
export function currentKey() {
  try {
    return localStorage.getItem(STORAGE_KEY) ?? sessionStorage.getItem(STORAGE_KEY) ?? '';
  } catch {
    return ''; // storage disabled: no key was kept
  }
}

export const keyVersion = () => version;

/** What a 401 means to the person at the page, depending on whether a key was sent. */
export const refusal = (sent) => (sent
  ? 'This API key was refused. Check it, or enter another one.'
  : 'This API needs a key. Enter it in the API key field.');

/** The API answered 401 to a request sent with the key of `sentVersion`: ask for a key. */
export function keyRefused(sentVersion, sent) {
  if (sentVersion !== version) return; // the key has changed since: that request is old news
  panel?.open(refusal(sent), { refused: sent });
}

/**
 * Run `retry` once a key is entered, or at once if the key changed since the refused request
 * (`error.keyVersion`). `name` stands for the work, so work refused twice runs again once.
 */
export function retryWithKey(name, retry, error) {
  if (error.keyVersion !== version) setTimeout(retry);
  else waiting.set(name, retry);
}

export function forgetRetry(name) {
  waiting.delete(name);
}

function storeKey(key, remember) {
  try {
    localStorage.removeItem(STORAGE_KEY);
    sessionStorage.removeItem(STORAGE_KEY);
    if (key) (remember ? localStorage : sessionStorage).setItem(STORAGE_KEY, key);
  } catch {
    // storage disabled or full: the key cannot be kept, and the page goes on without it
  }
  version += 1;
}

/** The key field: opened by its button in the top bar, or by any 401. */
export function setupKeyPanel({ button, form, input, reveal, remember, forget, message }) {
  const say = (text, { info = false } = {}) => {
    message.textContent = text ?? '';
    message.hidden = !text;
    message.classList.toggle('info', info);
  };
  const label = ({ refused = false } = {}) => {
    if (refused) button.textContent = 'API key (refused)';
    else button.textContent = currentKey() ? 'API key (set)' : 'API key';
  };
  const setOpen = (open) => {
    form.hidden = !open;
    button.setAttribute('aria-expanded', String(open));
  };
  const hide = () => {
    input.type = 'password';
    reveal.textContent = 'Show';
    reveal.setAttribute('aria-pressed', 'false');
  };

  input.value = currentKey();
  try {
    remember.checked = !sessionStorage.getItem(STORAGE_KEY);
  } catch {
    remember.checked = true;
  }
  label();

  panel = {
    open(text, { refused }) {
      const wasOpen = !form.hidden;
      setOpen(true);
      say(text);
      label({ refused });
      // Take the focus only from nobody: a background poll must not steal it from the question.
      if (!wasOpen && (document.activeElement === document.body || !document.activeElement)) {
        input.focus();
      }
    },
  };

  button.addEventListener('click', () => {
    setOpen(form.hidden);
    if (!form.hidden) input.focus();
  });
  reveal.addEventListener('click', () => {
    if (input.type !== 'password') {
      hide();
      return;
    }
    input.type = 'text';
    reveal.textContent = 'Hide';
    reveal.setAttribute('aria-pressed', 'true');
  });
  form.addEventListener('submit', (event) => {
    event.preventDefault(); // the browser's own submission would reload the page
    const key = input.value.trim();
    if (!key) {
      say('Enter a key first, or use “Forget key” to send none.');
      return;
    }
    if (!PRINTABLE.test(key)) {
      say('An API key is letters, digits and punctuation on one line; check what was pasted.');
      return;
    }
    storeKey(key, remember.checked);
    input.value = key;
    hide();
    label();
    say(null);
    setOpen(false);
    const retries = [...waiting.values()];
    waiting.clear();
    for (const retry of retries) retry();
  });
  forget.addEventListener('click', () => {
    storeKey('', false);
    input.value = '';
    hide();
    label();
    say('The key is forgotten: this browser sends none.', { info: true });
    input.focus();
  });
}
