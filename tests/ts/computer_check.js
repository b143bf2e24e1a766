// Computer use with the official TypeScript SDK against a Cove server; prints one JSON line.
// Usage: node computer_check.js <apiUrl> <apiKey>
const fs = require('fs')
const os = require('os')
const path = require('path')
const { Daytona } = require('@daytonaio/sdk')

const FORM = [
  'import gi',
  'gi.require_version("Gtk", "3.0")',
  'from gi.repository import Gtk',
  'w = Gtk.Window(title="TS form")',
  'b = Gtk.Box()',
  'e = Gtk.Entry()',
  'k = Gtk.Button(label="Done")',
  'k.connect("clicked", lambda _: open("/tmp/ts-saved", "w").write(e.get_text()))',
  'b.add(e)',
  'b.add(k)',
  'w.add(b)',
  'w.show_all()',
  'Gtk.main()',
].join('\n')

async function recordings(cu, out) {
  const rec = await cu.recording.start('ts')
  out.recording = rec.status
  const stopped = await cu.recording.stop(rec.id)
  out.listed = (await cu.recording.list()).recordings.map((r) => r.id === rec.id && r.status)
  const local = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'cove-rec-')), 'ts.mp4')
  await cu.recording.download(rec.id, local)
  const data = fs.readFileSync(local)
  out.download = [data.length === stopped.sizeBytes, data.subarray(4, 8).toString()]
  fs.rmSync(path.dirname(local), { recursive: true })
  await cu.recording.delete(rec.id)
  out.afterDelete = (await cu.recording.list()).recordings.length
}

async function accessibility(sandbox, cu, out) {
  await sandbox.fs.uploadFile(Buffer.from(FORM), '/tmp/ts_form.py')
  await sandbox.process.executeCommand('DISPLAY=:0 nohup python3 /tmp/ts_form.py >/dev/null 2>&1 &')
  let buttons = []
  for (let i = 0; i < 100 && buttons.length === 0; i++) {
    buttons = (await cu.accessibility.findNodes({ scope: 'all', role: 'push button' })).matches || []
    if (buttons.length === 0) await new Promise((r) => setTimeout(r, 200))
  }
  const [entry] = (await cu.accessibility.findNodes({ scope: 'all', role: 'text' })).matches
  await cu.accessibility.focusNode(entry.id)
  await cu.accessibility.setNodeValue(entry.id, 'from TS')
  await cu.accessibility.invokeNode(buttons[0].id, 'click')
  const tree = await cu.accessibility.getTree({ scope: 'all', maxDepth: 2 })
  out.tree = [tree.root.role, tree.root.children.map((c) => c.children[0].name)]
  for (let i = 0; i < 50; i++) {
    const saved = await sandbox.process.executeCommand('cat /tmp/ts-saved 2>/dev/null')
    out.saved = saved.result
    if (saved.result) break
    await new Promise((r) => setTimeout(r, 200))
  }
}

async function main() {
  const [apiUrl, apiKey] = process.argv.slice(2)
  const daytona = new Daytona({ apiUrl, apiKey, target: 'local' })
  const sandbox = await daytona.create({ autoArchiveInterval: 0 })
  const out = {}
  try {
    const cu = sandbox.computerUse
    const started = await cu.start()
    out.started = Object.keys(started.status).sort()
    out.status = (await cu.getStatus()).status
    const moved = await cu.mouse.move(120, 80)
    out.moved = [moved.x, moved.y]
    const info = await cu.display.getInfo()
    out.display = [info.displays[0].width, info.displays[0].height]
    const shot = await cu.screenshot.takeFullScreen()
    out.png = Buffer.from(shot.screenshot, 'base64').subarray(1, 4).toString()
    await recordings(cu, out)
    await accessibility(sandbox, cu, out)
    await cu.stop()
    out.stopped = (await cu.getStatus()).status
  } finally {
    await daytona.delete(sandbox)
  }
  console.log(JSON.stringify(out))
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
