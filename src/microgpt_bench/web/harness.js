"use strict";
// The page side of the browser rows (backends/browser.py drives it through Playwright).
// mgHarness.init() sets up one runner, the wasm kernel (kernels/mg_wasm.c) or the
// plain-JavaScript model (mg_model.js); the other calls run it. timed() and
// offline() time themselves with performance.now() around the loop, so the worker
// can see how much of its own window was IPC.

function bytesFromBase64(b64) {
  const s = atob(b64);
  const bytes = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
  return bytes;
}

async function wasmRunner(wasmBase64, weights, temperature) {
  const { instance } = await WebAssembly.instantiate(bytesFromBase64(wasmBase64), {});
  const k = instance.exports;
  const ok = (value, what) => {
    if (value < 0) throw new Error(`${what}: error code ${value}`);
    return value;
  };
  // the memory may grow in mg_scratch: views are made after it
  const scratch = (bytes) => {
    const p = k.mg_scratch(bytes);
    if (!p) throw new Error(`the wasm module could not grow its memory to ${bytes} bytes`);
    return p;
  };
  new Float32Array(k.memory.buffer, k.mg_weights(), weights.length).set(weights);
  ok(k.mg_init(temperature), "mg_init");
  return {
    logits(tokens) {
      const p = scratch(64 + tokens.length * VOCAB * 4);
      new Int32Array(k.memory.buffer, p, tokens.length).set(tokens);
      ok(k.mg_logits(p, tokens.length, p + 64), "mg_logits");
      return Array.from(new Float32Array(k.memory.buffer, p + 64, tokens.length * VOCAB));
    },
    generate(n, seed, uniforms, greedy) {
      const p = scratch(n * (uniforms ? 12 : 4));
      const out = uniforms ? p + 8 * n : p;
      if (uniforms) new Float64Array(k.memory.buffer, p, n).set(uniforms);
      ok(k.mg_generate(n, uniforms ? 0 : seed | 0, uniforms ? p : 0, out, greedy ? 1 : 0), "mg_generate");
      return Array.from(new Int32Array(k.memory.buffer, out, n));
    },
    run: (n, seed) => ok(k.mg_generate(n, seed | 0, 0, 0, 0), "mg_generate"),
    offline(streams, perStream, seed, keep) {
      const p = keep ? scratch(streams * perStream * 4) : 0;
      const checksum = ok(k.mg_generate_offline(streams, perStream, seed | 0, p), "mg_generate_offline");
      return { checksum, tokens: keep ? Array.from(new Int32Array(k.memory.buffer, p, streams * perStream)) : null };
    },
  };
}

function jsRunner(weights, temperature) {
  const model = new MicroGPT(weights, temperature);
  const logitsOf = (tokens) => {
    const out = [];
    tokens.forEach((t, pos) => out.push(...model.forward(t, pos)));
    return out;
  };
  const generate = (n, seed, uniforms, out, greedy = false) =>
    model.run(n, uniforms ? choicesPicker(uniforms) : xorshiftPicker(seed), out ? (t, i) => { out[i] = t; } : null,
              greedy);
  return {
    logits: logitsOf,
    generate(n, seed, uniforms, greedy) {
      const out = new Array(n);
      generate(n, seed, uniforms, out, greedy);
      return out;
    },
    run: (n, seed) => generate(n, seed, null, null),
    offline(streams, perStream, seed, keep) {
      const tokens = keep ? new Array(streams * perStream) : null;
      let checksum = 0;
      for (let s = 0; s < streams; s++) {
        const out = keep ? new Array(perStream) : null;
        checksum += generate(perStream, streamSeed(seed, s), null, out);
        if (keep) for (let i = 0; i < perStream; i++) tokens[s * perStream + i] = out[i];
      }
      return { checksum, tokens };
    },
  };
}

const mgHarness = {
  runner: null,
  async init(kind, weights, temperature, wasmBase64) {
    this.runner = kind === "wasm" ? await wasmRunner(wasmBase64, weights, temperature) : jsRunner(weights, temperature);
    return { kind, crossOriginIsolated: self.crossOriginIsolated, userAgent: navigator.userAgent };
  },
  logits(tokens) { return this.runner.logits(tokens); },
  generate(n, seed, uniforms, greedy) { return this.runner.generate(n, seed, uniforms, greedy); },
  // the timed windows: only the loop is inside performance.now()
  timed(n, seed) {
    const t0 = performance.now();
    const checksum = this.runner.run(n, seed);
    return { checksum, ms: performance.now() - t0 };
  },
  offline(streams, perStream, seed, keep) {
    const t0 = performance.now();
    const got = this.runner.offline(streams, perStream, seed, keep);
    return { ...got, ms: performance.now() - t0 };
  },
};
