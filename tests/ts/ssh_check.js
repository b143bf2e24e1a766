// SSH access with the official TypeScript SDK against a Cove server; prints one JSON line.
// Usage: node ssh_check.js <apiUrl> <apiKey>
const { execFileSync } = require('child_process')
const { Daytona } = require('@daytonaio/sdk')

async function main() {
  const [apiUrl, apiKey] = process.argv.slice(2)
  const daytona = new Daytona({ apiUrl, apiKey, target: 'local' })
  const out = {}
  const sandbox = await daytona.create()
  try {
    const access = await sandbox.createSshAccess(10)
    out.token = access.token
    out.command = access.sshCommand
    out.sandboxId = sandbox.id
    out.valid = await sandbox.validateSshAccess(access.token)
    // run the command the SDK gave, with the real OpenSSH client
    const args = access.sshCommand.split(' ').slice(1)
    out.ran = execFileSync('ssh', ['-F', '/dev/null', '-o', 'StrictHostKeyChecking=no',
      '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR',
      ...args, 'echo hello-over-ssh'], { timeout: 60000 }).toString()
    await sandbox.revokeSshAccess(access.token)
    out.afterRevoke = await sandbox.validateSshAccess(access.token)
  } finally {
    await sandbox.delete()
    out.deleted = true
  }
  console.log(JSON.stringify(out))
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
