// Matplotlib charts from codeRun with the official TypeScript SDK; prints one JSON line.
// Usage: node charts_check.js <apiUrl> <apiKey>
const { Daytona } = require('@daytonaio/sdk')

const LINE = `
import matplotlib.pyplot as plt
print('before')
plt.plot([1, 2, 3], [4, 5, 7], label='growth')
plt.title('TS line')
plt.show()
print('after')
`

async function main() {
  const [apiUrl, apiKey] = process.argv.slice(2)
  const daytona = new Daytona({ apiUrl, apiKey, target: 'local' })
  const sandbox = await daytona.create({ language: 'python' })
  try {
    const run = await sandbox.process.codeRun(LINE)
    const charts = run.artifacts.charts.map((c) => ({ ...c, png: c.png.slice(0, 12) }))
    const plain = await sandbox.process.codeRun("print('just text')")
    console.log(JSON.stringify({
      exitCode: run.exitCode, result: run.result, stdout: run.artifacts.stdout, charts,
      plain: { result: plain.result, charts: plain.artifacts.charts },
    }))
  } finally {
    await sandbox.delete()
  }
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
