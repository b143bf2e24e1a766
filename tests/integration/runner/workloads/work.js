// Node.js inside a sandbox: worker threads, child processes, fs.watch (inotify), sockets.
const { Worker, isMainThread, parentPort } = require('worker_threads');

if (!isMainThread) {
  parentPort.postMessage(21 * 2);
} else {
  main().catch((err) => { console.error(err); process.exit(1); });
}

async function main() {
  const cp = require('child_process');
  const crypto = require('crypto');
  const dns = require('dns');
  const fs = require('fs');
  const net = require('net');
  const os = require('os');
  const path = require('path');
  const check = (ok, what) => { if (!ok) throw new Error(what); };

  const fromWorker = await new Promise((resolve, reject) => {
    new Worker(__filename).on('message', resolve).on('error', reject);
  });
  check(fromWorker === 42, 'worker thread');
  check(cp.execFileSync('echo', ['child']).toString() === 'child\n', 'execFileSync');
  const code = await new Promise((resolve) => cp.spawn('sh', ['-c', 'exit 4']).on('exit', resolve));
  check(code === 4, 'spawn');

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'watch-'));
  const changed = new Promise((resolve) => {
    const watcher = fs.watch(dir, () => { watcher.close(); resolve(); });
  });
  fs.writeFileSync(path.join(dir, 'file'), 'x');
  await changed;

  const reply = await new Promise((resolve, reject) => {
    const server = net.createServer((s) => s.end('pong')).listen(0, '127.0.0.1', () => {
      net.connect(server.address().port, '127.0.0.1')
        .on('data', (data) => { server.close(); resolve(data.toString()); })
        .on('error', reject);
    });
  });
  check(reply === 'pong', 'tcp');
  check(crypto.randomBytes(8).length === 8, 'randomBytes');
  check(os.networkInterfaces().lo !== undefined, 'networkInterfaces');
  await dns.promises.lookup('localhost');
  await fs.promises.readFile('/etc/hostname');
  console.log('node ok');
}
