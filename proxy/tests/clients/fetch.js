// Fetches https://HOST:PORT/PATH through an HTTP proxy with Node's core modules: CONNECT, then
// TLS to the proxy's leaf (trusting CA), then one GET. Prints the status, then the body.
const http = require("http");
const https = require("https");
const tls = require("tls");
const fs = require("fs");

const [proxyHost, proxyPort, host, port, path, caFile] = process.argv.slice(2);
const ca = fs.readFileSync(caFile);
const connect = http.request({
  host: proxyHost,
  port: Number(proxyPort),
  method: "CONNECT",
  path: `${host}:${port}`,
});
connect.on("connect", (res, socket) => {
  if (res.statusCode !== 200) {
    console.log(res.statusCode);
    process.exit(0);
  }
  const req = https.get(
    {
      host,
      port: Number(port),
      path,
      createConnection: () => tls.connect({ socket, servername: host, ca }),
    },
    (resp) => {
      let body = "";
      resp.on("data", (d) => (body += d));
      resp.on("end", () => {
        console.log(resp.statusCode);
        console.log(body);
        process.exit(0);
      });
    },
  );
  req.on("error", (e) => {
    console.error(e);
    process.exit(1);
  });
});
connect.on("error", (e) => {
  console.error(e);
  process.exit(1);
});
connect.end();
