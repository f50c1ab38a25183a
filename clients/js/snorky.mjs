// Snorky's client as an ES module: `import Snorky from "/snorky.mjs"`. A file cannot be a
// plain script and an ES module at once (`export` is a syntax error in a plain script), so
// this wrapper runs snorky.js, which defines `globalThis.Snorky` when it is not loaded as
// CommonJS, and exports it.
import "./snorky.js";

const Snorky = globalThis.Snorky;
export default Snorky;
export { Snorky };
