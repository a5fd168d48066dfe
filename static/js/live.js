// The room's live websocket: connects, reconnects with capped exponential back-off and jitter,
// and reports its state (connecting | live | reconnecting | offline). It knows nothing about the page.

const MIN_DELAY = 500;
const MAX_DELAY = 10000;
const WELCOME_TIMEOUT = 15000;

// Delay before reconnect attempt `attempt` (0, 1, 2, ...): a ceiling of 0.5 s doubling up to
// 10 s, randomised down to as little as half of it (never under 0.5 s) so that a crowd of
// clients dropped together does not come back all at once.
export function backoff(attempt, random = Math.random) {
  const ceiling = Math.min(MAX_DELAY, MIN_DELAY * 2 ** Math.min(attempt, 10));
  return Math.max(MIN_DELAY, Math.round(ceiling / 2 + (random() * ceiling) / 2));
}

export class LiveConnection {
  // url(): the websocket URL to use for the next attempt.
  // onFrame(frame): each parsed server frame.
  // onClose(code, reason, usedToken): return 'stop', 'now' or 'retry'.
  // onState(state): connection state changes.
  constructor({ url, onFrame, onClose, onState }) {
    this.url = url;
    this.onFrame = onFrame;
    this.onClose = onClose;
    this.onState = onState;
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.welcomeTimer = null;
    this.stopped = false;
    this.everLive = false;
    this.ready = false;
    this.state = null;
    this.handlers = {
      online: () => this.reconnectNow(),
      offline: () => {
        if (!this.ready) this.setState('offline');
      },
      visibilitychange: () => {
        if (document.visibilityState === 'visible') this.reconnectNow();
      },
    };
    window.addEventListener('online', this.handlers.online);
    window.addEventListener('offline', this.handlers.offline);
    document.addEventListener('visibilitychange', this.handlers.visibilitychange);
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.onState(state);
  }

  get isOpen() {
    return this.ready && this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  connect() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.stopped) return;
    this.setState(this.everLive ? 'reconnecting' : 'connecting');
    const { href, usedToken } = this.url();
    let ws;
    try {
      ws = new WebSocket(href);
    } catch {
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    this.ready = false;
    clearTimeout(this.welcomeTimer);
    this.welcomeTimer = setTimeout(() => {
      if (this.ws === ws && !this.ready) ws.close(4000, 'no welcome');
    }, WELCOME_TIMEOUT);

    ws.addEventListener('message', (event) => {
      if (this.ws !== ws) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (!frame || typeof frame !== 'object') return;
      if (frame.type === 'welcome') {
        clearTimeout(this.welcomeTimer);
        this.ready = true;
        this.everLive = true;
        this.attempt = 0;
        this.setState('live');
      }
      this.onFrame(frame);
    });

    ws.addEventListener('close', (event) => {
      if (this.ws !== ws) return;
      clearTimeout(this.welcomeTimer);
      this.ws = null;
      this.ready = false;
      const decision = this.onClose(event.code, event.reason, usedToken);
      if (decision === 'stop' || this.stopped) {
        this.stopped = true;
        this.setState('offline');
      } else if (decision === 'now') {
        this.connect();
      } else {
        this.scheduleRetry();
      }
    });
  }

  scheduleRetry() {
    if (this.stopped) return;
    const offline = navigator.onLine === false;
    this.setState(offline ? 'offline' : 'reconnecting');
    // Offline: the 'online' event reconnects at once; still retry now and then in case it lies.
    const delay = offline ? MAX_DELAY : backoff(this.attempt);
    this.attempt += 1;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  // Skip the rest of a back-off wait (network came back, tab became visible).
  reconnectNow() {
    if (this.stopped || this.ws !== null) return;
    this.attempt = 0;
    this.connect();
  }

  // Drop the current socket and connect again at once (e.g. with a new token).
  restart() {
    this.stopped = false;
    const old = this.ws;
    this.ws = null;
    this.ready = false;
    if (old) old.close(1000, 'restart');
    this.everLive = false;
    this.attempt = 0;
    this.connect();
  }

  send(frame) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.welcomeTimer);
    const old = this.ws;
    this.ws = null;
    this.ready = false;
    if (old) old.close(1000, 'bye');
    this.setState('offline');
  }
}
