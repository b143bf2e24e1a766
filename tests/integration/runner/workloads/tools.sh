# Tools inside a sandbox: git, venv and pip, job control on a pty, ps, top, tar, curl, timeout, flock.
set -eu
export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@t GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@t
cd "$(mktemp -d)"
git init -q src
echo one > src/f
git -C src add f
git -C src commit -qm one
git clone -q src dst
git clone -q --no-local "file://$PWD/src" dst2
echo two >> dst/f
git -C dst commit -qam two
git -C dst gc -q
test "$(git -C dst rev-list --count HEAD)" = 2
python3 -m venv v
python3 - <<'PY'
import zipfile
with zipfile.ZipFile("demo-1-py3-none-any.whl", "w") as whl:
    whl.writestr("demo/__init__.py", "X = 1\n")
    whl.writestr("demo-1.dist-info/METADATA", "Metadata-Version: 2.1\nName: demo\nVersion: 1\n")
    whl.writestr("demo-1.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    whl.writestr("demo-1.dist-info/RECORD", "")
PY
v/bin/pip install -q --no-index ./demo-1-py3-none-any.whl
v/bin/python -c 'import demo; assert demo.X == 1'
script -qec "bash -ic 'sleep 30 & jobs; kill %1; wait; echo jobs ok'" /dev/null
ps -ef > /dev/null
top -b -n1 > /dev/null
tar czf a.tgz -C src .
mkdir x
tar xzf a.tgz -C x
test -f x/f
python3 -u -m http.server 0 --bind 127.0.0.1 > http.log 2>&1 &
for i in $(seq 100); do grep -q port http.log && break; sleep 0.1; done
port=$(sed -n 's/.*port \([0-9]*\).*/\1/p' http.log)
curl -sf "http://127.0.0.1:$port/" > /dev/null
kill %1
rc=0; timeout 0.5 sleep 5 || rc=$?
test $rc = 124
flock lock -c true
echo tools ok
