// renderd page shim: injected before any page script runs (Playwright add_init_script).
// It gives the page a virtual clock so that the picture depends on the frame index alone,
// whichever worker renders it and in whatever order, and one seek entry point per frame.
(() => {
  if (window.__renderdShim) return;
  const realRAF = window.requestAnimationFrame.bind(window);
  const RealDate = Date;
  // A fixed epoch: Date.now() must not differ between workers or hosts.
  const EPOCH_MS = 946684800000; // 2000-01-01T00:00:00Z
  let nowMs = 0;
  let rafQueue = [];
  let rafNext = 1;
  const errors = [];

  performance.now = () => nowMs;
  class VirtualDate extends RealDate {
    constructor(...args) {
      if (args.length === 0) super(EPOCH_MS + nowMs);
      else super(...args);
    }
    static now() { return EPOCH_MS + nowMs; }
  }
  window.Date = VirtualDate;

  // rAF callbacks are queued and run once per seek with the virtual time, so rAF-driven
  // animations advance by composition time, not by wall clock.
  window.requestAnimationFrame = (cb) => { const id = rafNext++; rafQueue.push([id, cb]); return id; };
  window.cancelAnimationFrame = (id) => { rafQueue = rafQueue.filter((e) => e[0] !== id); };

  // Seeded PRNG (mulberry32), reseeded per frame: a frame draws the same "random" numbers
  // whichever worker renders it.
  let seed = 0x2f6b1d3c;
  const reseed = (s) => { seed = (s ^ 0x2f6b1d3c) >>> 0; };
  Math.random = () => {
    seed = (seed + 0x6d2b79f5) >>> 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };

  window.addEventListener("error", (e) => {
    errors.push(e.error && e.error.message ? e.error.message : String(e.message || e));
  });
  window.addEventListener("unhandledrejection", (e) => {
    const r = e.reason;
    errors.push("unhandled rejection: " + (r && r.message ? r.message : String(r)));
  });

  const rootEl = () => document.querySelector("[data-composition-id]");
  const hook = () => {
    const h = window.__renderd;
    return h && typeof h.seek === "function" ? h : null;
  };
  const num = (v) => (v === undefined || v === null || v === "" ? null : Number(v));
  // GSAP timelines are thenables: never hand one back to the driver (it would await it).
  const timelines = () => {
    const reg = window.__timelines;
    if (!reg || typeof reg !== "object") return [];
    return Object.values(reg).filter((tl) => tl && typeof tl.totalTime === "function");
  };
  const cssEnd = () => {
    let end = 0;
    for (const a of document.getAnimations()) {
      const e = a.effect && a.effect.getComputedTiming ? a.effect.getComputedTiming().endTime : 0;
      if (Number.isFinite(e) && e > end) end = e;
    }
    return end / 1000;
  };

  const settle = (n) => new Promise((resolve) => {
    const step = (k) => (k <= 0 ? resolve() : realRAF(() => step(k - 1)));
    step(n);
  });

  async function mediaReady() {
    if (document.fonts && document.fonts.status !== "loaded") await document.fonts.ready;
    const pending = [];
    for (const img of document.images) {
      if (!img.complete) pending.push(img.decode().catch(() => {}));
    }
    if (pending.length) await Promise.all(pending);
  }

  window.__renderdShim = {
    errors,
    // What kind of composition this is and what it says about itself.
    describe() {
      const h = hook();
      const root = rootEl();
      const info = { kind: "clock", errors: errors.slice() };
      if (h) {
        Object.assign(info, {
          kind: "hook", width: num(h.width), height: num(h.height),
          fps: h.fps === undefined ? null : String(h.fps), duration: num(h.duration),
        });
      } else if (root) {
        const id = root.getAttribute("data-composition-id");
        const reg = window.__timelines || {};
        const tl = reg[id];
        Object.assign(info, {
          kind: "hyperframes", compositionId: id,
          timelineRegistered: !!(tl && typeof tl.totalTime === "function"),
          timelineDuration: tl && typeof tl.duration === "function" ? tl.duration() : null,
        });
      }
      const dataRoot = root || document.querySelector("[data-duration],[data-width]");
      if (dataRoot && info.kind !== "hook") {
        info.width = num(dataRoot.getAttribute("data-width"));
        info.height = num(dataRoot.getAttribute("data-height"));
        info.fps = dataRoot.getAttribute("data-fps");
        info.duration = num(dataRoot.getAttribute("data-duration"));
      }
      info.animationsEnd = cssEnd();
      return info;
    },
    // Resolves when the page is ready to be seeked: loaded, fonts, images, hook.ready.
    async ready() {
      const h = hook();
      if (h && h.ready !== undefined) {
        const r = typeof h.ready === "function" ? h.ready() : h.ready;
        await r;
      }
      await mediaReady();
      return true;
    },
    // Show composition time t (seconds) for absolute frame `frame`, then let it paint.
    async seek(t, frame, settleFrames) {
      nowMs = t * 1000;
      reseed(frame);
      const queue = rafQueue;
      rafQueue = [];
      for (const [, cb] of queue) cb(nowMs);
      const h = hook();
      if (h) {
        await h.seek(t);
      } else {
        for (const tl of timelines()) {
          // totalTime(t, false) fires onUpdate callbacks, as HyperFrames' GSAP adapter does;
          // seek() would suppress them and leave callback-driven content stale.
          tl.totalTime(t, false);
        }
      }
      for (const a of document.getAnimations()) {
        a.pause();
        a.currentTime = t * 1000;
      }
      await mediaReady();
      await settle(settleFrames);
      return errors.length;
    },
  };
})();
