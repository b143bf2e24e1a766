// Drives Cove's git administration and environment updates with the official TypeScript
// SDK; prints one JSON line of results. Usage: node git_env_check.js <apiUrl> <apiKey>
const { Daytona } = require('@daytonaio/sdk')

async function run(sandbox, command) {
  const r = await sandbox.process.executeCommand(command)
  if (r.exitCode !== 0) throw new Error(`${command}: ${r.result}`)
  return r.result
}

async function main() {
  const [apiUrl, apiKey] = process.argv.slice(2)
  const daytona = new Daytona({ apiUrl, apiKey, target: 'local' })
  const out = {}
  const sandbox = await daytona.create({ envVars: { CREATED: 'at-create' } })
  try {
    const git = sandbox.git
    await git.init('ts/repo', false, 'trunk')
    await git.configureUser('TS User', 'ts@example.com', 'local', 'ts/repo')
    out.localName = await git.getConfig('user.name', 'local', 'ts/repo')
    await git.setConfig('cove.ts', 'value with spaces')
    out.globalValue = await git.getConfig('cove.ts')
    out.unset = await git.getConfig('cove.never-set')
    await sandbox.fs.uploadFile(Buffer.from('one\n'), 'ts/repo/f.txt')
    await git.add('ts/repo', ['f.txt'])
    await git.commit('ts/repo', 'first', 'TS User', 'ts@example.com')
    await sandbox.fs.uploadFile(Buffer.from('two\n'), 'ts/repo/f.txt')
    await git.restore('ts/repo', ['f.txt'])
    out.restored = await run(sandbox, 'cat ts/repo/f.txt')
    await sandbox.fs.uploadFile(Buffer.from('three\n'), 'ts/repo/f.txt')
    await git.add('ts/repo', ['f.txt'])
    await git.reset('ts/repo', 'hard', 'HEAD')
    out.reset = await run(sandbox, 'cat ts/repo/f.txt')
    await git.remoteAdd('ts/repo', 'origin', 'https://example.invalid/a.git')
    await git.remoteAdd('ts/repo', 'origin', 'https://example.invalid/b.git', false, true)
    out.remotes = (await git.remotes('ts/repo')).remotes
    out.remoteGet = await git.remoteGet('ts/repo', 'origin')
    out.branch = (await git.status('ts/repo')).currentBranch
    await git.dangerouslyAuthenticate('ts-user', 'ts-token-secret', 'git.example.test')
    out.credentials = await run(sandbox, 'stat -c "%a %U" ~/.git-credentials && cat ~/.git-credentials')
    try {
      await git.remoteAdd('ts/repo', 'evil', '--upload-pack=touch /tmp/x')
      out.dashUrl = 'accepted'
    } catch (e) {
      out.dashUrl = String(e.message)
    }
    await sandbox.updateEnv({ TS_VAR: 'from-ts' }, { unset: ['CREATED'] })
    out.env = await run(sandbox, 'echo "$TS_VAR/${CREATED-gone}"')
  } finally {
    await sandbox.delete()
  }
  console.log(JSON.stringify(out))
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e))
  process.exit(1)
})
