'use strict';
// runbox's warm start for `node main.js ARGS` (see the agent's prepare_warm): started before
// the job arrives, it reads the program's name and arguments from the pipe numbered argv[2],
// then runs the program as node's own entry point does, from the event loop's first turn so
// that no frame of this file lies below the program's.
(() => {
  const fs = require('fs');
  const control = Number(process.argv[2]);
  const chunks = [];
  const buffer = Buffer.alloc(65536);
  for (let n; (n = fs.readSync(control, buffer, 0, buffer.length, null)) > 0;) {
    chunks.push(Buffer.from(buffer.subarray(0, n)));
  }
  fs.closeSync(control);
  if (chunks.length === 0) process.reallyExit(0);
  const [file, ...args] = Buffer.concat(chunks).toString().split('\0');
  process.argv = [process.argv[0], require('path').resolve(file), ...args];
  delete require.cache[__filename];
  setImmediate(require('module').runMain);
})();
