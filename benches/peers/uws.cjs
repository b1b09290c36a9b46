// What the uWebSockets.js peers share: the npm package's binary for this Node, and listening on
// the `--listen HOST:PORT` address bench-runner gives.
//
// The package ships one binary per platform and Node ABI; the one for this Node is loaded
// directly (on Linux x64 with Node 20: binaries/uws_linux_x64_115.node).

'use strict';

const path = require('node:path');
const { parseArgs } = require('node:util');

/** The uWebSockets.js module for this platform and Node. */
function loadUws() {
    const packageDir = path.dirname(require.resolve('@trufflesuite/uws-js-unofficial/package.json'));
    const binary = `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`;
    return require(path.join(packageDir, 'binaries', binary));
}

/** Listens on `--listen HOST:PORT`, or exits with a message naming `script`. */
function listen(app, script) {
    const { values: args } = parseArgs({ options: { listen: { type: 'string' } } });
    if (!args.listen) {
        console.error(`usage: node ${script} --listen HOST:PORT`);
        process.exit(2);
    }
    const colon = args.listen.lastIndexOf(':');
    app.listen(args.listen.slice(0, colon), Number(args.listen.slice(colon + 1)), (socket) => {
        if (!socket) {
            console.error(`${script}: cannot listen on ${args.listen}`);
            process.exit(1);
        }
    });
}

module.exports = { listen, loadUws };
