"use strict";
// microGPT in plain JavaScript, written the way a web developer would: the weights
// and activations in Float32Arrays, a KV cache per position, Math.exp and Math.sqrt,
// softmax with the max subtracted, the spec's xorshift32 and python-choices
// samplers, and greedy decoding (temperature 0: the lowest index of the max logit). Arithmetic is JavaScript's (float64), rounded to float32 wherever a
// value is stored in a Float32Array.

const VOCAB = 27, BOS = 26, N_EMBD = 16, N_HEAD = 4, HEAD_DIM = 4, N_HIDDEN = 64, BLOCK_SIZE = 16;

class MicroGPT {
  // weights: the 4,192 parameters in the C flat order
  // (wte, wpe, wq, wk, wv, wo, fc1, fc2, lm_head; each row-major [out][in])
  constructor(weights, temperature) {
    const w = Float32Array.from(weights);
    let offset = 0;
    const take = (rows, cols) => w.subarray(offset, (offset += rows * cols));
    this.wte = take(VOCAB, N_EMBD);
    this.wpe = take(BLOCK_SIZE, N_EMBD);
    this.wq = take(N_EMBD, N_EMBD);
    this.wk = take(N_EMBD, N_EMBD);
    this.wv = take(N_EMBD, N_EMBD);
    this.wo = take(N_EMBD, N_EMBD);
    this.fc1 = take(N_HIDDEN, N_EMBD);
    this.fc2 = take(N_EMBD, N_HIDDEN);
    this.lmHead = take(VOCAB, N_EMBD);
    this.temperature = temperature;
    this.keys = new Float32Array(BLOCK_SIZE * N_EMBD);    // [position][dim]
    this.values = new Float32Array(BLOCK_SIZE * N_EMBD);
    this.x = new Float32Array(N_EMBD);
    this.residual = new Float32Array(N_EMBD);
    this.xn = new Float32Array(N_EMBD);
    this.q = new Float32Array(N_EMBD);
    this.attOut = new Float32Array(N_EMBD);
    this.hidden = new Float32Array(N_HIDDEN);
    this.scores = new Float32Array(BLOCK_SIZE);
    this.logits = new Float32Array(VOCAB);
    this.probs = new Float64Array(VOCAB);
  }

  static linear(out, w, x, rows, cols, outOffset = 0) {
    for (let r = 0; r < rows; r++) {
      let sum = 0;
      for (let c = 0; c < cols; c++) sum += w[r * cols + c] * x[c];
      out[outOffset + r] = sum;
    }
  }

  static rmsnorm(out, x) {
    let ms = 0;
    for (let i = 0; i < x.length; i++) ms += x[i] * x[i];
    const scale = 1 / Math.sqrt(ms / x.length + 1e-5);
    for (let i = 0; i < x.length; i++) out[i] = x[i] * scale;
  }

  // one token at position pos (the cache holds positions 0..pos-1); returns this.logits
  forward(token, pos) {
    const { x, residual, xn, q, attOut, hidden, scores } = this;
    for (let i = 0; i < N_EMBD; i++) x[i] = this.wte[token * N_EMBD + i] + this.wpe[pos * N_EMBD + i];
    MicroGPT.rmsnorm(residual, x);
    MicroGPT.rmsnorm(xn, residual);            // the model's second norm
    MicroGPT.linear(q, this.wq, xn, N_EMBD, N_EMBD);
    MicroGPT.linear(this.keys, this.wk, xn, N_EMBD, N_EMBD, pos * N_EMBD);
    MicroGPT.linear(this.values, this.wv, xn, N_EMBD, N_EMBD, pos * N_EMBD);
    const scale = 1 / Math.sqrt(HEAD_DIM);
    for (let h = 0; h < N_HEAD; h++) {
      const base = h * HEAD_DIM;
      let max = -Infinity;
      for (let t = 0; t <= pos; t++) {
        let s = 0;
        for (let d = 0; d < HEAD_DIM; d++) s += q[base + d] * this.keys[t * N_EMBD + base + d];
        scores[t] = s * scale;
        if (scores[t] > max) max = scores[t];
      }
      let total = 0;
      for (let t = 0; t <= pos; t++) {
        scores[t] = Math.exp(scores[t] - max);
        total += scores[t];
      }
      for (let d = 0; d < HEAD_DIM; d++) {
        let sum = 0;
        for (let t = 0; t <= pos; t++) sum += scores[t] * this.values[t * N_EMBD + base + d];
        attOut[base + d] = sum / total;
      }
    }
    MicroGPT.linear(x, this.wo, attOut, N_EMBD, N_EMBD);
    for (let i = 0; i < N_EMBD; i++) x[i] += residual[i];
    residual.set(x);
    MicroGPT.rmsnorm(xn, x);
    MicroGPT.linear(hidden, this.fc1, xn, N_HIDDEN, N_EMBD);
    for (let i = 0; i < N_HIDDEN; i++) if (hidden[i] < 0) hidden[i] = 0;
    MicroGPT.linear(x, this.fc2, hidden, N_EMBD, N_HIDDEN);
    for (let i = 0; i < N_EMBD; i++) x[i] += residual[i];
    MicroGPT.linear(this.logits, this.lmHead, x, VOCAB, N_EMBD);
    return this.logits;
  }

  // softmax(logits / T) into this.probs; returns their running sums' total (1 up to rounding)
  softmax(logits) {
    let max = -Infinity;
    for (let v = 0; v < VOCAB; v++) max = Math.max(max, logits[v] / this.temperature);
    let total = 0;
    for (let v = 0; v < VOCAB; v++) total += (this.probs[v] = Math.exp(logits[v] / this.temperature - max));
    for (let v = 0; v < VOCAB; v++) this.probs[v] /= total;
    return this.probs;
  }

  // the generation loop: n tokens; next(probs) picks each (greedy: the argmax of the
  // logits instead, as at temperature 0); onToken(t, i) sees each
  run(n, next, onToken, greedy = false) {
    greedy = greedy || this.temperature === 0;
    let token = BOS, pos = 0, checksum = 0;
    for (let i = 0; i < n; i++) {
      const logits = this.forward(token, pos);
      const t = greedy ? argmax(logits) : next(this.softmax(logits));
      if (onToken) onToken(t, i);
      checksum += t;
      pos++;
      if (t === BOS || pos === BLOCK_SIZE) {
        token = BOS;
        pos = 0;
      } else {
        token = t;
      }
    }
    return checksum;
  }
}

// the lowest index of the maximum
function argmax(values) {
  let best = 0;
  for (let v = 1; v < values.length; v++) if (values[v] > values[best]) best = v;
  return best;
}

// xorshift32 (13/17/5): r = (x >>> 8) / 2^24; the first id whose running sum exceeds r, else the last
function xorshiftPicker(seed) {
  let x = seed >>> 0;
  return (probs) => {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    const r = (x >>> 8) / 16777216;
    let c = 0;
    for (let v = 0; v < VOCAB - 1; v++) {
      c += probs[v];
      if (r < c) return v;
    }
    return VOCAB - 1;
  };
}

// Python's random.choices(weights=probs) given its draws u: the first id whose running sum exceeds u * total
function choicesPicker(uniforms) {
  let i = 0;
  const cum = new Float64Array(VOCAB);
  return (probs) => {
    let c = 0;
    for (let v = 0; v < VOCAB; v++) cum[v] = (c += probs[v]);
    const thr = uniforms[i++] * cum[VOCAB - 1];
    for (let v = 0; v < VOCAB - 1; v++) if (thr < cum[v]) return v;
    return VOCAB - 1;
  };
}

// samplers.stream_seed: murmur3's fmix32 of base + golden * i; 0 maps to 1
function streamSeed(base, i) {
  let h = (base + Math.imul(0x9E3779B9, i)) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85EBCA6B) >>> 0;
  h ^= h >>> 13;
  h = Math.imul(h, 0xC2B2AE35) >>> 0;
  h ^= h >>> 16;
  return h === 0 ? 1 : h;
}
