// The room's live connection: a websocket, or, where websockets do not get through, the room's
// event stream (server-sent events). It connects, reconnects with capped exponential back-off and
// jitter, and reports its state (connecting | live | reconnecting | offline). It knows nothing
// about the page.

import { api, ApiError, roomPath } from './api.js';

const MIN_DELAY = 500;
const MAX_DELAY = 10000;
const WELCOME_TIMEOUT = 15000;
const FALLBACK_AFTER = 3; // websockets that fail to open in a row before the event stream takes over

// Delay before reconnect attempt `attempt` (0, 1, 2, ...): a ceiling of 0.5 s doubling up to
// 10 s, randomised down to as little as half of it (never under 0.5 s) so that a crowd of
// clients dropped together does not come back all at once.
export function backoff(attempt, random = Math.random) {
  const ceiling = Math.min(MAX_DELAY, MIN_DELAY * 2 ** Math.min(attempt, 10));
  return Math.max(MIN_DELAY, Math.round(ceiling / 2 + (random() * ceiling) / 2));
}

// The URL of room `name`'s websocket ('live') or event stream ('events'), which say the same:
// resuming after seq `since` (if not null) of the room `roomId` was, with `token` (if any).
export function roomLiveUrl(name, transport, { since, roomId, token }) {
  const params = new URLSearchParams();
  if (since !== null) {
    params.set('since', String(since));
    if (roomId) params.set('room_id', String(roomId));
  }
  if (token) params.set('token', token);
  const query = params.toString();
  const path = `${roomPath(name)}/${transport}${query ? '?' + query : ''}`;
  if (transport === 'events') return { href: path, usedToken: token };
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  return { href: `${proto}://${location.host}${path}`, usedToken: token };
}

// Why room `name`'s event stream was refused, which an EventSource does not tell: the same read
// over the API says. As the websocket would close: 4404 no room any more, 1008 the token is refused.
export function roomRefusal(name) {
  return async (usedToken) => {
    try {
      await api('GET', `${roomPath(name)}/messages?limit=1`, { token: usedToken });
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) return 4404;
      if (err instanceof ApiError && err.status === 401) return 1008;
    }
    return null;
  };
}

export class LiveConnection {
  // url(transport): {href, usedToken} for the next attempt over 'live' (the websocket) or
  //   'events' (the event stream).
  // onFrame(frame): each parsed server frame.
  // onClose(code, reason, usedToken): return 'stop', 'now' or 'retry'. (The event stream's
  //   endings come as the websocket's close codes: 4404 the room was deleted, 1008 refused.)
  // onState(state): connection state changes.
  // refusal(usedToken): a Promise of the close code that explains why the event stream was
  //   refused (an EventSource does not tell the HTTP status), or null if it is worth retrying.
  constructor({ url, onFrame, onClose, onState, refusal }) {
    this.url = url;
    this.onFrame = onFrame;
    this.onClose = onClose;
    this.onState = onState;
    this.refusal = refusal;
    this.transport = 'live';
    this.failedOpens = 0;
    this.ws = null;
    this.source = null;
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

  // Whether posts can go over the websocket (over the event stream they go over HTTP).
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
    if (this.transport === 'events') this.connectEvents();
    else this.connectSocket();
  }

  connectSocket() {
    const { href, usedToken } = this.url('live');
    let ws;
    try {
      ws = new WebSocket(href);
    } catch {
      this.failedOpens += 1;
      this.closed(1006, '', usedToken);
      return;
    }
    this.ws = ws;
    this.ready = false;
    let opened = false;
    this.awaitWelcome(() => this.ws === ws, () => ws.close(4000, 'no welcome'));

    ws.addEventListener('open', () => {
      opened = true;
      this.failedOpens = 0;
    });
    ws.addEventListener('message', (event) => {
      if (this.ws === ws) this.receive(event.data);
    });
    ws.addEventListener('close', (event) => {
      if (this.ws !== ws) return;
      clearTimeout(this.welcomeTimer);
      this.ws = null;
      this.ready = false;
      if (!opened) this.failedOpens += 1;
      this.closed(event.code, event.reason, usedToken);
    });
  }

  // The event stream. The browser reconnects it by itself, resuming with Last-Event-ID.
  connectEvents() {
    const { href, usedToken } = this.url('events');
    let source;
    try {
      source = new EventSource(href);
    } catch {
      this.scheduleRetry();
      return;
    }
    this.source = source;
    this.ready = false;
    this.awaitWelcome(() => this.source === source, () => this.endEvents(4000, 'no welcome', usedToken));

    source.addEventListener('message', (event) => {
      if (this.source !== source) return;
      const frame = this.receive(event.data);
      // The room was deleted: its last frame, before the server ends the stream.
      if (frame && frame.type === 'error' && frame.code === 'not_found') {
        this.endEvents(4404, frame.message || '', usedToken);
      }
    });
    source.addEventListener('error', () => {
      if (this.source !== source) return;
      this.ready = false;
      if (source.readyState !== EventSource.CLOSED) {
        this.setState('reconnecting');
        return;
      }
      this.source = null;
      clearTimeout(this.welcomeTimer);
      this.refusal(usedToken).then((code) => {
        if (this.source === null && this.ws === null && !this.stopped) this.closed(code ?? 1006, '', usedToken);
      });
    });
  }

  endEvents(code, reason, usedToken) {
    clearTimeout(this.welcomeTimer);
    this.source.close();
    this.source = null;
    this.ready = false;
    this.closed(code, reason, usedToken);
  }

  // Give up on a connection that says no welcome in time.
  awaitWelcome(current, giveUp) {
    clearTimeout(this.welcomeTimer);
    this.welcomeTimer = setTimeout(() => {
      if (current() && !this.ready) giveUp();
    }, WELCOME_TIMEOUT);
  }

  // One server frame; returns it parsed, or null.
  receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return null;
    }
    if (!frame || typeof frame !== 'object') return null;
    if (frame.type === 'welcome') {
      clearTimeout(this.welcomeTimer);
      this.ready = true;
      this.everLive = true;
      this.attempt = 0;
      this.setState('live');
    }
    this.onFrame(frame);
    return frame;
  }

  closed(code, reason, usedToken) {
    const decision = this.onClose(code, reason, usedToken);
    if (decision === 'stop' || this.stopped) {
      this.stopped = true;
      this.setState('offline');
    } else if (decision === 'now') {
      this.connect();
    } else if (this.transport === 'live' && this.failedOpens >= FALLBACK_AFTER) {
      this.transport = 'events'; // websockets do not get through here
      this.connect();
    } else {
      this.scheduleRetry();
    }
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
    if (this.stopped || this.ws !== null || this.source !== null) return;
    this.attempt = 0;
    this.connect();
  }

  // Drop the current connection, if any.
  drop(reason) {
    clearTimeout(this.welcomeTimer);
    const { ws, source } = this;
    this.ws = null;
    this.source = null;
    this.ready = false;
    if (ws) ws.close(1000, reason);
    if (source) source.close();
  }

  // Drop the current connection and connect again at once (e.g. with a new token).
  restart() {
    this.stopped = false;
    this.drop('restart');
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
    this.drop('bye');
    this.setState('offline');
  }
}
