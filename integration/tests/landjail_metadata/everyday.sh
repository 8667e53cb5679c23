# Everyday work that changes modes, owners and times in the working directory: each step must
# work in landjail (landjail_metadata.rs). npm is optional (Debian's nodejs has none).
set -e
printf '#!/bin/sh\necho script-ran\n' > run.sh
chmod +x run.sh
./run.sh
touch -d @1000000000 touched
test "$(stat -c %Y touched)" = 1000000000
mkdir -p src
echo data > src/file
chmod 0750 src/file
touch -d @1000000000 src/file
cp -p src/file copy
test "$(stat -c '%a %Y' copy)" = "750 1000000000"
tar cf t.tar src
mkdir out
tar xpf t.tar -C out
test "$(stat -c '%a %Y' out/src/file)" = "750 1000000000"
git init -q repo
cd repo
git config user.email t@e
git config user.name t
echo x > tool
chmod +x tool
git add tool
git commit -qm one
git checkout -q -b two
rm tool
git checkout -q tool
test -x tool
cd ..
if command -v npm >/dev/null; then
  mkdir -p pkg/package
  printf '{"name":"p","version":"1.0.0","bin":{"pbin":"cli.js"}}' > pkg/package/package.json
  printf '#!/bin/sh\necho npm-bin-ran\n' > pkg/package/cli.js
  tar czf p.tgz -C pkg package
  npm install --offline --no-audit --no-fund --loglevel=error ./p.tgz
  ./node_modules/.bin/pbin
else
  echo 'NO NPM: npm install not exercised'
fi
echo POSITIVE-OK
