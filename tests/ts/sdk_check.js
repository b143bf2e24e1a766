// Drives a Cove server with the official TypeScript SDK; prints one JSON line of results.
// Usage: node sdk_check.js <apiUrl> <apiKey>
const { Daytona } = require('@daytonaio/sdk')

async function main() {
  const [apiUrl, apiKey] = process.argv.slice(2)
  const daytona = new Daytona({ apiUrl, apiKey, target: 'local' })
  const out = {}
  const sandbox = await daytona.create({ autoArchiveInterval: 0 })
  try {
    out.state = sandbox.state
    out.autoArchiveInterval = sandbox.autoArchiveInterval
    const exec = await sandbox.process.executeCommand('echo hello-from-ts')
    out.exec = { exitCode: exec.exitCode, result: exec.result }
    try {
      await sandbox.process.executeCommand('sleep 30', undefined, undefined, 1)
      out.timeout = 'no error'
    } catch (e) {
      out.timeout = String(e.message)
    }
    const metrics = await sandbox.getMetricsLatest()
    out.metrics = metrics
    const home = await sandbox.getUserHomeDir()
    await sandbox.fs.uploadFile(Buffer.from("const s = 'abc';\ns.toUpp\n"), 'main.ts')
    const lsp = await sandbox.createLspServer('typescript', home)
    let t0 = Date.now()
    await lsp.start()
    out.lspStartMs = Date.now() - t0
    await lsp.didOpen('main.ts')
    t0 = Date.now()
    const completions = await lsp.completions('main.ts', { line: 1, character: 7 })
    out.firstCompletionMs = Date.now() - t0
    out.completionLabels = completions.items.map((i) => i.label).slice(0, 200)
    out.symbols = (await lsp.documentSymbols('main.ts')).map((s) => s.name)
    await lsp.stop()
    const entry = await sandbox.process.getEntrypointSession()
    out.entrypoint = { sessionId: entry.sessionId, commands: entry.commands.length }
    // a signed URL, fetched with no API key
    const url = await sandbox.downloadUrl(home + '/main.ts', 60)
    const fetched = await fetch(url)
    out.signedDownload = { status: fetched.status, body: await fetched.text() }
  } finally {
    await sandbox.delete()
  }
  out.deleted = true
  console.log(JSON.stringify(out))
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e))
  process.exit(1)
})
