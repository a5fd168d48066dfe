// A minimal broadcast server on Node's http and the ws library, for comparison with tmd:
//
//     node bench/reference/ws_server.js
//
// It speaks tmd's frames without tmd's work: no storage, no participants, no limits.
// A websocket at /api/v1/rooms/{name}/live gets a welcome frame and then every message
// frame of its room; POST /api/v1/rooms/{name}/messages with {"body": ...} numbers the
// message in memory, answers 201 with it, and sends the frame (one Buffer) to each
// client of the room, as ws's broadcast example does. It listens on a free loopback
// port, says "reference listening on TCP 127.0.0.1:PORT" on stdout, and stops on SIGTERM.
"use strict";

const http = require("http");
const path = require("path");
const WebSocket = require(path.join(__dirname, "..", "node_modules", "ws"));

const ROUTE = /^\/api\/v1\/rooms\/([^/]+)\/(live|messages)$/;
const rooms = new Map(); // name -> Set of sockets
const seqs = new Map();

const wss = new WebSocket.WebSocketServer({ noServer: true, perMessageDeflate: false });

const server = http.createServer((request, response) => {
  const match = ROUTE.exec(request.url);
  if (!match || match[2] !== "messages" || request.method !== "POST") {
    response.writeHead(404).end();
    return;
  }
  const name = match[1];
  const chunks = [];
  request.on("data", (chunk) => chunks.push(chunk));
  request.on("end", () => {
    const { body } = JSON.parse(Buffer.concat(chunks));
    const seq = (seqs.get(name) || 0) + 1;
    seqs.set(name, seq);
    const message = {
      seq, room: name, kind: "message", author: "speaker", body,
      created_at: new Date().toISOString(), source: "web", participant_id: 1,
    };
    const frame = Buffer.from(JSON.stringify({ type: "message", message }));
    for (const client of rooms.get(name) || []) {
      if (client.readyState === WebSocket.OPEN) client.send(frame, { binary: false });
    }
    response.writeHead(201, { "content-type": "application/json" }).end(JSON.stringify(message));
  });
});

server.on("upgrade", (request, socket, head) => {
  const match = ROUTE.exec(request.url.split("?")[0]);
  if (!match || match[2] !== "live") {
    socket.destroy();
    return;
  }
  wss.handleUpgrade(request, socket, head, (ws) => {
    const name = match[1];
    if (!rooms.has(name)) rooms.set(name, new Set());
    rooms.get(name).add(ws);
    ws.on("close", () => rooms.get(name).delete(ws));
    ws.send(JSON.stringify({ type: "welcome", room: { name }, you: null }));
  });
});

server.listen(0, "127.0.0.1", () => {
  console.log(`reference listening on TCP 127.0.0.1:${server.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));
