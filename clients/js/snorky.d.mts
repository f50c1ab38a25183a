// TypeScript declarations of snorky.mjs, the ES module wrapper of snorky.js.
import Snorky = require("./snorky.js");

export default Snorky;
export { Snorky };
