// The bench's load generator: websocket subscribers and HTTP posters in one Node process.
//
//     node bench/loadgen.js
//
// bench/run.py drives it over stdin and stdout, one JSON object per line each way.
// It answers every command with {"id": ..., "ok": true, ...} (or "ok": false and
// "error"), and starts by printing {"ready": true}. Commands:
//
//   connect  {rooms: [{ws, post, token}], per_room, parallel}
//            opens per_room websockets to each room (parallel handshakes at a time)
//            and waits for each one's welcome frame.
//   post     {rate, duration, window, drain}
//            posts to the rooms in turn, open loop: rate posts/s on a schedule for
//            duration seconds, or, without a rate, as fast as `window` posts not yet
//            delivered to every subscriber allow (saturation). Then waits (up to drain
//            seconds) until every subscriber has every post, and reports latencies,
//            deliveries and losses.
//   close    {}  closes every websocket.
//   exit     {}  ends the process.
//
// The websocket clients are plain TCP sockets speaking RFC 6455 themselves, and frames
// are not parsed as JSON: a message frame starts {"type":"message" and the seq and
// body are read from the bytes, which keeps this process cheap per frame.
// Every subscriber checks that seqs come one after another (no gap, duplicate or
// reordering) and counts what it got; a sample of them times each message from the
// moment its POST was written to the moment the frame is read.
"use strict";

const crypto = require("crypto");
const http = require("http");
const net = require("net");
const readline = require("readline");
const { performance } = require("perf_hooks");

const SEQ = Buffer.from('"seq":');
const BODY = Buffer.from('"body":"q');
const M = 0x6d; // m: {"type":"message"
const W = 0x77; // w: {"type":"welcome"
const E = 0x65; // e: {"type":"error"
const TYPE_AT = 9; // {"type":" is 9 bytes
const SAMPLED_PER_ROOM = 100;

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
let rooms = [];
let phase = null; // the running post command's counters
let problems = [];

function digitsAt(buffer, at) {
  let value = 0;
  for (let i = at; i < buffer.length; i++) {
    const c = buffer[i];
    if (c < 48 || c > 57) break;
    value = value * 10 + (c - 48);
  }
  return value;
}

function problem(text) {
  if (problems.length < 20) problems.push(text);
}

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const HEAD_END = Buffer.from("\r\n\r\n");

// One websocket client on a plain TCP socket: the handshake, then server frames read
// straight from the bytes (text frames, pings answered, the close handshake).
class Subscriber {
  constructor(room, index) {
    this.room = room;
    this.sampled = index % Math.max(1, Math.ceil(room.per_room / SAMPLED_PER_ROOM)) === 0;
    this.lastSeq = -1;
    this.received = 0;
    this.gaps = 0;
    this.closedByServer = false;
    this.closing = false;
    this.welcomed = false;
    this.open_ = false;
    this.rest = null;
  }

  open(timeout) {
    return new Promise((resolve, reject) => {
      const url = new URL(this.room.ws);
      const key = crypto.randomBytes(16).toString("base64");
      const accept = crypto.createHash("sha1").update(key + GUID).digest("base64");
      const socket = net.connect({ host: url.hostname, port: Number(url.port) });
      this.socket = socket;
      socket.setNoDelay(true);
      const timer = setTimeout(() => fail(new Error("no welcome in time")), timeout * 1000);
      let head = Buffer.alloc(0);
      let settled = false;
      const fail = (error) => {
        clearTimeout(timer);
        if (!settled) {
          settled = true;
          socket.destroy();
          reject(error);
        }
      };
      this.onWelcome = () => {
        clearTimeout(timer);
        settled = this.welcomed = true;
        resolve();
      };
      socket.on("connect", () => socket.write(
        `GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\n` +
        "Upgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`));
      socket.on("data", (chunk) => {
        if (this.open_) return this.parse(chunk);
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf(HEAD_END);
        if (end < 0) return;
        const text = head.subarray(0, end).toString("latin1");
        if (!text.startsWith("HTTP/1.1 101") || !text.includes(accept)) {
          return fail(new Error(`handshake refused: ${text.split("\r\n")[0]}`));
        }
        this.open_ = true;
        if (head.length > end + 4) this.parse(head.subarray(end + 4));
      });
      socket.on("error", (error) => {
        if (!settled) fail(error);
        else if (!this.closing) problem(`socket error: ${error.message}`);
      });
      socket.on("close", () => {
        if (!settled) fail(new Error("closed before welcome"));
        else if (this.welcomed && !this.closing) {
          this.closedByServer = true;
          problem("closed by the server");
        }
        if (this.onClosed) this.onClosed();
      });
    });
  }

  parse(chunk) {
    const buffer = this.rest === null ? chunk : Buffer.concat([this.rest, chunk]);
    const size = buffer.length;
    let at = 0;
    for (;;) {
      if (size - at < 2) break;
      const b0 = buffer[at];
      let length = buffer[at + 1] & 0x7f;
      let header = 2;
      if (length === 126) {
        if (size - at < 4) break;
        length = buffer.readUInt16BE(at + 2);
        header = 4;
      } else if (length === 127) {
        if (size - at < 10) break;
        length = Number(buffer.readBigUInt64BE(at + 2));
        header = 10;
      }
      if (size - at < header + length) break;
      const start = at + header;
      const end = start + length;
      const opcode = b0 & 0x0f;
      if (opcode === 1 && b0 & 0x80) this.frame(buffer, start, end);
      else if (opcode === 9) this.control(0xa, buffer.subarray(start, end));
      else if (opcode === 8) this.serverClosed(buffer.subarray(start, end));
      else if (opcode !== 10) problem(`unexpected frame opcode ${opcode} (FIN ${b0 >> 7})`);
      at = end;
    }
    this.rest = at < size ? buffer.subarray(at) : null;
  }

  frame(data, start, end) {
    const kind = data[start + TYPE_AT];
    if (kind === M) this.message(data, start, end);
    else if (kind === W && !this.welcomed) this.onWelcome();
    else if (kind === E) problem(`error frame: ${data.toString("utf8", start, Math.min(end, start + 200))}`);
  }

  // A masked frame from the client (RFC 6455 5.3): only pongs and the close here.
  control(opcode, payload) {
    const mask = crypto.randomBytes(4);
    const frame = Buffer.alloc(6 + payload.length);
    frame[0] = 0x80 | opcode;
    frame[1] = 0x80 | payload.length;
    mask.copy(frame, 2);
    for (let i = 0; i < payload.length; i++) frame[6 + i] = payload[i] ^ mask[i % 4];
    if (!this.socket.destroyed) this.socket.write(frame);
  }

  serverClosed(payload) {
    if (!this.closing) {
      this.closedByServer = true;
      problem(`closed by the server: ${payload.length >= 2 ? payload.readUInt16BE(0) : ""} ` +
              payload.subarray(2).toString());
      this.closing = true;
      this.control(0x8, payload.subarray(0, 2));
    }
    this.socket.end();
  }

  message(data, start, end) {
    const now = performance.now();
    const at = data.indexOf(SEQ, start + TYPE_AT);
    if (at < 0 || at >= end) return problem("a message frame without a seq");
    const seq = digitsAt(data, at + SEQ.length);
    if (this.lastSeq >= 0 && seq !== this.lastSeq + 1) {
      this.gaps += 1;
      problem(`seq ${seq} after ${this.lastSeq}`);
    }
    this.lastSeq = seq;
    const current = phase;
    if (current === null) return;
    const bodyAt = data.indexOf(BODY, at);
    if (bodyAt < 0 || bodyAt >= end) return; // not one of this phase's posts
    const id = digitsAt(data, bodyAt + BODY.length);
    const post = current.posts[id];
    if (post === undefined) return;
    this.received += 1;
    current.delivered += 1;
    current.lastDelivery = now;
    if (this.sampled) current.latencies.push(now - post.sent);
    post.left -= 1;
    if (post.left === 0) current.complete(post);
  }

  close() {
    return new Promise((resolve) => {
      if (this.socket.destroyed) return resolve();
      this.onClosed = resolve;
      if (!this.closing) {
        this.closing = true;
        this.control(0x8, Buffer.from([0x03, 0xe8])); // 1000
      }
      setTimeout(() => this.socket.destroy(), 5000).unref();
    });
  }
}

async function connect({ rooms: targets, per_room: perRoom, parallel = 32, timeout = 15 }) {
  const started = performance.now();
  const pending = [];
  for (const target of targets) {
    const room = { ...target, per_room: perRoom, subs: [], accepted: 0 };
    rooms.push(room);
    for (let i = 0; i < perRoom; i++) pending.push(new Subscriber(room, i));
  }
  let next = 0;
  async function worker() {
    while (next < pending.length) {
      const sub = pending[next++];
      await sub.open(timeout);
      sub.room.subs.push(sub);
    }
  }
  await Promise.all(Array.from({ length: Math.min(parallel, pending.length) }, worker));
  return { sockets: pending.length, seconds: (performance.now() - started) / 1000 };
}

function send(room, id, onAnswer) {
  const body = JSON.stringify({ body: `q${id} is light a wave?` });
  const url = new URL(room.post);
  const headers = { "content-type": "application/json", "content-length": Buffer.byteLength(body) };
  if (room.token) headers.authorization = `Bearer ${room.token}`;
  const request = http.request({
    agent, method: "POST", host: url.hostname, port: url.port, path: url.pathname, headers,
  }, (response) => {
    response.resume();
    response.on("end", () => onAnswer(response.statusCode));
  });
  request.on("error", (error) => onAnswer(0, error));
  request.end(body);
}

function summary(values) {
  const sorted = Float64Array.from(values).sort();
  const at = (q) => (sorted.length ? sorted[Math.max(1, Math.ceil(q * sorted.length)) - 1] : null);
  const round = (x) => (x === null ? null : Math.round(x * 1000) / 1000);
  return {
    n: sorted.length, p50_ms: round(at(0.5)), p90_ms: round(at(0.9)), p99_ms: round(at(0.99)),
    max_ms: round(sorted.length ? sorted[sorted.length - 1] : null),
  };
}

function post({ rate = null, duration, window = 16, drain = 10 }) {
  return new Promise((resolve) => {
    const targets = rooms.filter((room) => room.post);
    const cpu = process.cpuUsage();
    const elu = performance.eventLoopUtilization();
    const started = performance.now();
    const until = started + duration * 1000;
    let id = 0;
    let inFlight = 0; // posted, not yet delivered to everyone
    let answered = 0;
    let failed = 0;
    let posting = true;
    let drainTimer = null;
    const replies = [];
    const lags = [];
    const current = {
      posts: [], latencies: [], delivered: 0, lastDelivery: started,
      complete(post) {
        inFlight -= 1;
        if (!posting) maybeDone();
        else if (rate === null) fill();
      },
    };
    phase = current;
    for (const sub of rooms.flatMap((room) => room.subs)) sub.received = 0;
    for (const room of rooms) room.accepted = 0;

    function one() {
      const room = targets[id % targets.length];
      const post = { sent: performance.now(), left: room.subs.length, room };
      current.posts[id] = post;
      inFlight += 1;
      const sent = post.sent;
      send(room, id, (status, error) => {
        answered += 1;
        if (status === 201) {
          room.accepted += 1;
          replies.push(performance.now() - sent);
        } else {
          failed += 1;
          problem(`POST ${room.post}: ${status} ${error ? error.message : ""}`);
          inFlight -= 1; // nothing will be delivered
          post.left = -1;
        }
        if (post.left === 0 && room.subs.length === 0) current.complete(post);
        if (!posting) maybeDone();
      });
      id += 1;
    }

    function fill() {
      while (posting && inFlight < window) one();
    }

    const total = rate === null ? Infinity : Math.ceil(duration * rate);
    function tick() {
      const now = performance.now();
      if (rate !== null) { // every post due by now, late ones too: the schedule is kept
        const due = Math.min(Math.floor(((now - started) / 1000) * rate) + 1, total);
        while (id < due) {
          lags.push(now - (started + (id / rate) * 1000));
          one();
        }
      }
      if (now >= until) {
        posting = false;
        drainTimer = setTimeout(finish, drain * 1000);
        maybeDone();
        return;
      }
      // Wake up when the next post is due (or at the end), not every millisecond.
      const next = rate === null ? until : Math.min(until, started + (id / rate) * 1000);
      setTimeout(tick, Math.max(0, next - performance.now()));
    }

    function maybeDone() {
      if (!posting && answered === id && inFlight <= 0) finish();
    }

    let finished = false;
    function finish() {
      if (finished) return;
      finished = true;
      clearTimeout(drainTimer);
      phase = null;
      const used = process.cpuUsage(cpu);
      const expected = rooms.reduce((sum, room) => sum + room.accepted * room.subs.length, 0);
      const wall = (current.lastDelivery - started) / 1000;
      resolve({
        posts: id, accepted: id - failed, failed,
        post_seconds: (Math.min(performance.now(), until) - started) / 1000,
        posts_per_s: (id - failed) / duration,
        reply: summary(replies),
        delivery: summary(current.latencies),
        deliveries: current.delivered,
        expected,
        lost: expected - current.delivered,
        gaps: rooms.reduce((sum, room) => sum + room.subs.reduce((s, sub) => s + sub.gaps, 0), 0),
        closed_by_server: rooms.reduce(
          (sum, room) => sum + room.subs.filter((sub) => sub.closedByServer).length, 0),
        delivery_wall_s: wall,
        deliveries_per_s: wall > 0 ? current.delivered / wall : null,
        send_lag_p99_ms: summary(lags).p99_ms,
        cpu_s: (used.user + used.system) / 1e6,
        event_loop_utilization: performance.eventLoopUtilization(elu).utilization,
      });
    }

    if (rate === null) fill();
    tick();
  });
}

async function close() {
  const subs = rooms.flatMap((room) => room.subs);
  await Promise.all(subs.map((sub) => sub.close()));
  rooms = [];
  return { closed: subs.length };
}

const commands = { connect, post, close };
const cpuAtStart = process.cpuUsage();

function reply(object) {
  process.stdout.write(JSON.stringify(object) + "\n");
}

readline.createInterface({ input: process.stdin }).on("line", async (line) => {
  const { id, command, ...args } = JSON.parse(line);
  if (command === "exit") {
    agent.destroy();
    process.exit(0);
  }
  try {
    problems = [];
    const result = await commands[command](args);
    const cpu = process.cpuUsage(cpuAtStart);
    reply({
      id, ok: true, ...result, problems,
      total_cpu_s: (cpu.user + cpu.system) / 1e6,
      rss_kib: Math.round(process.memoryUsage().rss / 1024),
    });
  } catch (error) {
    reply({ id, ok: false, error: String(error && error.stack ? error.stack : error), problems });
  }
});
process.stdin.on("end", () => process.exit(0));
reply({ ready: true, node: process.version });
