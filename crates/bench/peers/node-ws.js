// The pattern most Genesys integrations start from: open the channel's connectUri with
// the `ws` package, send the documented keepalive ({"message":"ping"}) every 15 s and
// print every message. The channel and its subscriptions were made over REST beforehand.
const WebSocket = require('ws');

const ws = new WebSocket(process.argv[2]);
ws.on('open', () => {
  setInterval(() => ws.send(JSON.stringify({ message: 'ping' })), 15000);
});
ws.on('message', (data) => {
  console.log(data.toString());
});
ws.on('close', (code) => {
  console.error(`socket closed (${code})`);
  process.exit(1);
});
ws.on('error', (err) => {
  console.error(err.message);
  process.exit(1);
});
