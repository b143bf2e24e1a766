// Secrets, TTL, auto-pause and the metrics history through the official TypeScript SDK.
// Usage: node secrets_check.js <apiUrl> <apiKey> <secretValue>; prints one JSON line.
const { Daytona } = require('@daytonaio/sdk')

async function main() {
  const [apiUrl, apiKey, value] = process.argv.slice(2)
  const daytona = new Daytona({ apiUrl, apiKey, target: 'local' })
  const out = {}
  const secret = await daytona.secret.create({ name: 'ts-secret', value, hosts: ['api.example.com'] })
  out.secret = secret
  const sandbox = await daytona.create({ secrets: { TS_TOKEN: 'ts-secret' }, autoPauseInterval: 30 })
  try {
    out.env = (await sandbox.process.executeCommand('printf %s "$TS_TOKEN"')).result
    out.autoPause = [sandbox.autoPauseInterval, sandbox.autoStopInterval]
    await sandbox.updateSecrets({ TS_OTHER: 'ts-secret' })
    out.afterUpdate = (await sandbox.process.executeCommand('printf %s "$TS_TOKEN:$TS_OTHER"')).result
    await sandbox.setTtl(60)
    await sandbox.refreshData()
    out.autoDestroyAt = sandbox.autoDestroyAt
    await sandbox.setAutoPauseInterval(0)
    await sandbox.refreshData()
    out.autoPauseOff = sandbox.autoPauseInterval
    const page = await daytona.secret.list({ limit: 10 })
    out.list = { total: page.total, names: page.items.map((s) => s.name) }
    out.got = await daytona.secret.get(secret.id)
    out.updated = await daytona.secret.update(secret.id, { description: 'ts', value: value + '2' })
    let samples = []
    for (let i = 0; i < 60 && samples.length < 2; i++) {
      samples = await sandbox.getMetrics()
      if (samples.length < 2) await new Promise((r) => setTimeout(r, 500))
    }
    out.samples = samples.length
    out.sample = samples[samples.length - 1]
  } finally {
    await sandbox.delete()
    await daytona.secret.delete(secret.id)
  }
  try {
    await daytona.secret.get(secret.id)
    out.afterDelete = 'found'
  } catch (e) {
    out.afterDelete = String(e.message)
  }
  console.log(JSON.stringify(out))
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
