// Computer use with the official TypeScript SDK against a Cove server; prints one JSON line.
// Usage: node computer_check.js <apiUrl> <apiKey>
const { Daytona } = require('@daytonaio/sdk')

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
