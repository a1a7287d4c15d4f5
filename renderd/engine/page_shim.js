// renderd page shim: injected before any page script runs (Playwright add_init_script).
// It gives the page a virtual clock so that the picture depends on the frame index alone,
// whichever worker renders it and in whatever order, and one seek entry point per frame.
(() => {
  if (window.__renderdShim) return;
  const realRAF = window.requestAnimationFrame.bind(window);
  const realCancelRAF = window.cancelAnimationFrame.bind(window);
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

  const flushRAF = () => {
    const queue = rafQueue;
    rafQueue = [];
    for (const [, cb] of queue) cb(nowMs);
  };
  // Documents in same-origin iframes (this shim runs in every frame) keep the page's clock:
  // their rAF-driven content advances with composition time too, as in HyperFrames.
  const tickFrames = (t, frame) => {
    for (const el of document.querySelectorAll("iframe")) {
      let child = null;
      try {
        child = el.contentWindow && el.contentWindow.__renderdShim; // cross-origin: throws
      } catch {
        continue;
      }
      if (child && typeof child.tick === "function") child.tick(t, frame);
    }
  };

  // HyperFrames pages register their timelines on window.__timelines, often without creating
  // it; page scripts (shader transitions) write to window.__hf before the runtime exists.
  if (!window.__timelines || typeof window.__timelines !== "object") window.__timelines = {};
  if (!window.__hf || typeof window.__hf !== "object") window.__hf = {};
  // The HyperFrames runtime recognises a render driver's virtual clock by this object (it then
  // stops yielding to the real event loop between sub-composition scripts).
  window.__HF_VIRTUAL_TIME__ = {
    originalSetTimeout: window.setTimeout.bind(window),
    originalClearTimeout: window.clearTimeout.bind(window),
    originalSetInterval: window.setInterval.bind(window),
    originalClearInterval: window.clearInterval.bind(window),
    originalRequestAnimationFrame: realRAF,
    originalCancelAnimationFrame: realCancelRAF,
    seekToTime(ms) { nowMs = Math.max(0, Number(ms) || 0); flushRAF(); return nowMs; },
    getTime() { return nowMs; },
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
  // The HyperFrames runtime (injected by renderd into HyperFrames projects) drives clips,
  // sub-compositions and every animation adapter through this player.
  const hfPlayer = () => {
    const p = window.__player;
    return p && typeof p.renderSeek === "function" && typeof p.getDuration === "function" ? p : null;
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

  // Duration of a root without data-duration, from its sub-composition hosts.
  const hostsEnd = () => {
    let end = 0;
    for (const el of document.querySelectorAll("[data-composition-src]")) {
      const start = Number(el.getAttribute("data-start")) || 0;
      const d = Number(el.getAttribute("data-duration")) || 0;
      if (d > 0) end = Math.max(end, start + d);
    }
    return end;
  };

  // CSS transitions start when a seek changes a style, and would then run in real time:
  // frames depended on capture speed (a slower host drew them further along), and HyperFrames'
  // WAAPI adapter adopts them only now and then. renderd drives every transition itself: it
  // starts at the composition time of the seek that first sees it and advances with composition
  // time, as it would in a browser playing the composition at normal speed.
  //
  // A style change that interrupts a running transition starts the next one from where the
  // running one has got to, so a timeline that moves an element with a transition every frame
  // builds a chain: the element chases its target. Existing transitions are therefore moved to
  // the new time before the seek changes styles (advanceTransitions), as a browser playing the
  // composition would have them; driven only afterwards, each link would start from its
  // predecessor's first frame and the element would not move until the timeline stops.
  const transitionStart = new WeakMap(); // CSSTransition -> composition time (s) first seen
  const inFlight = new Set(); // transitions driven by the last seek, not yet replaced or ended
  let started = 0; // transitions first seen by the current seek
  const isTransition = (a) => typeof CSSTransition !== "undefined" && a instanceof CSSTransition;
  const driveTransition = (a, t) => {
    let t0 = transitionStart.get(a);
    if (t0 === undefined) {
      t0 = t;
      transitionStart.set(a, t0);
      started += 1;
    }
    a.pause();
    a.currentTime = Math.max(0, (t - t0) * 1000);
    inFlight.add(a);
  };
  const driveTransitions = (t) => {
    for (const a of document.getAnimations()) if (isTransition(a)) driveTransition(a, t);
  };
  const advanceTransitions = (t) => {
    started = 0;
    for (const a of inFlight) {
      // Replaced by a newer transition (cancelled): nothing left to move.
      if (a.playState === "idle") {
        inFlight.delete(a);
        continue;
      }
      driveTransition(a, t);
      const end = a.effect ? a.effect.getComputedTiming().endTime : 0;
      if ((t - transitionStart.get(a)) * 1000 >= end) inFlight.delete(a); // over, now at its end
    }
  };

  // End every transition (each jumps to its end value) and forget the ones in flight.
  const settleTransitions = () => {
    for (const a of document.getAnimations()) if (isTransition(a)) a.cancel();
    inFlight.clear();
    changed = true;  // read by staticVerdict, defined below (only called after this script ran)
  };

  // Under BeginFrame control (engine/beginframe.py) renderd draws the frames itself, after the
  // call that would have waited for them: waiting here would depend on when a tick comes.
  let manualFrames = false;
  const settle = (n) => new Promise((resolve) => {
    if (manualFrames) { resolve(); return; }
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

  // The page's (and its same-origin iframes') clock and Math.random stream for frame `frame` at t.
  const setClock = (t, frame) => {
    nowMs = t * 1000;
    reseed(frame);
    tickFrames(t, frame);
  };

  // GSAP animations running on GSAP's own ticker, outside every registered timeline (slide decks
  // start entrance tweens from a timeline callback when a slide becomes active): what they show
  // depends on the seeks before, like anime.js.
  const freeGsapRunning = () => {
    const g = window.gsap;
    if (!g || !g.globalTimeline || typeof g.globalTimeline.getChildren !== "function") return false;
    const registered = new Set(Object.values(window.__timelines || {}));
    return g.globalTimeline.getChildren(false, true, true).some(
      (c) => !registered.has(c) && !c.paused() && c.totalDuration() > 0 && c.totalProgress() < 1
    );
  };

  // Raster of will-change layers. Chromium rasterises a layer with `will-change: transform`
  // (or translate/rotate/scale) once, when it is first drawn, and then only moves that raster:
  // text on it keeps the subpixel offset of that first frame until the layer is hidden (opacity
  // 0, visibility hidden, display none) and drawn again. So a frame of a scrolling ticker depends
  // on where its layer's current "drawn episode" began, and a worker that jumped into the middle
  // of one drew other glyphs than a sequential pass (39 dB on HyperFrames' news-ticker block).
  // Before a jump the driver finds where each such layer's episode began (rasterBits, read in a
  // page of its own), drops the layers that started elsewhere (tagRasters: will-change off), and
  // brings each back while showing the frame its episode began on (releaseRasters), as a
  // sequential pass drew it.
  const RASTER_HINT = /\b(transform|translate|rotate|scale)\b/;
  const ANCHOR = "data-renderd-raster-anchor";
  let flatStyle = null;
  const rasterTracked = () => {
    const tracked = [];
    for (const el of document.querySelectorAll("*")) {
      // A layer tagged by tagRasters has will-change off until released: still one of them.
      if (el.hasAttribute(ANCHOR) || RASTER_HINT.test(getComputedStyle(el).willChange)) tracked.push(el);
    }
    return tracked;
  };
  const rasterDrawn = (el) =>
    el.isConnected && el.checkVisibility({ opacityProperty: true, visibilityProperty: true });
  // The page's state at frame `frame` (time t), for reading styles only: nothing is drawn and no
  // rAF callback runs.
  const stateAt = async (t, frame) => {
    unproven();
    nowMs = t * 1000;
    reseed(frame);
    const p = hfPlayer();
    const h = hook();
    if (p) p.renderSeek(t);
    else if (h) await h.seek(t);
    else for (const tl of timelines()) tl.totalTime(t, false);
    for (const a of document.getAnimations()) {
      if (isTransition(a)) a.cancel();  // as at its end: what the frame settles to
      else if (!p) { a.pause(); a.currentTime = t * 1000; }
    }
  };

  // Static frames: whether a seek provably changed nothing the screenshot shows since the seek of
  // the frame before, so the driver may reuse that frame's picture (pool.py, "static frames").
  // Proof, not prediction: every DOM change (GSAP and the HyperFrames runtime write inline styles,
  // classes, text; clips are shown and hidden by style), every stylesheet edit made through the
  // CSSOM methods, any Web/CSS animation whose timing moved, a transition in flight, scroll, fonts
  // and images still loading: each makes the frame "not static". Canvas, video, iframes, SMIL and
  // animated images draw without touching the DOM, so a page with any is never static. A fade
  // with tiny steps still writes a new opacity every frame; a hard cut shows or hides a clip.
  // What escapes this (a property set on a stylesheet rule, say) the driver's sampled pixel
  // comparison catches, and it then stops reusing frames for the chunk.
  let changed = true; // since the last verdict
  const markChanged = () => { changed = true; };
  const observer = new MutationObserver(markChanged);
  observer.observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
  // `differs(self)`: a value read before and after the call; null means "always a change".
  const patchChanging = (proto, names, differs) => {
    if (!proto) return;
    for (const name of names) {
      const desc = Object.getOwnPropertyDescriptor(proto, name);
      if (!desc) continue;
      const wrap = (f) => function (...args) {
        const before = differs ? differs(this) : null;
        try {
          return f.apply(this, args);
        } finally {
          if (before === null || differs(this) !== before) changed = true;
        }
      };
      if (typeof desc.value === "function") Object.defineProperty(proto, name, { ...desc, value: wrap(desc.value) });
      else if (typeof desc.set === "function") Object.defineProperty(proto, name, { ...desc, set: wrap(desc.set) });
    }
  };
  patchChanging(window.CSSStyleSheet && CSSStyleSheet.prototype,
    ["insertRule", "deleteRule", "addRule", "removeRule", "replace", "replaceSync"]);
  // Inline styles change the style attribute (observed); a stylesheet rule's style does not.
  patchChanging(window.CSSStyleDeclaration && CSSStyleDeclaration.prototype,
    ["setProperty", "removeProperty", "cssText"], (decl) => decl.cssText);
  patchChanging(window.CSSRule && CSSRule.prototype, ["cssText"]);
  patchChanging(Document.prototype, ["adoptedStyleSheets"]);
  const NEVER_STATIC = "canvas, video, iframe, embed, object, animate, animateMotion, animateTransform, set, discard";
  const ANIMATED_IMAGE = /\.(gif|webp|apng)([?#]|$)/i;
  const animationIds = new WeakMap();
  let nextAnimationId = 1;
  const staticSignature = () => {
    const parts = [window.scrollX, window.scrollY, devicePixelRatio];
    if (document.fonts) parts.push(document.fonts.status, document.fonts.size);
    let loading = 0;
    for (const img of document.images) {
      if (!img.complete) loading += 1;
      if (ANIMATED_IMAGE.test(img.currentSrc || img.src || "")) return null;
    }
    parts.push(loading);
    for (const a of document.getAnimations()) {
      let id = animationIds.get(a);
      if (id === undefined) animationIds.set(a, (id = nextAnimationId++));
      const ct = a.effect && a.effect.getComputedTiming ? a.effect.getComputedTiming() : null;
      parts.push(`${id}:${a.playState}:${ct ? `${ct.progress}/${ct.currentIteration}` : "-"}`);
    }
    return parts.join("|");
  };
  let verdictFrame = null; // the frame of the last verdict
  let verdictSignature = null;
  // Forget the last verdict: the page was changed outside a render seek (a jump to read styles).
  const unproven = () => { changed = true; verdictFrame = null; };
  const staticVerdict = (frame) => {
    const records = observer.takeRecords().length;
    const sig = document.querySelector(NEVER_STATIC) ? null : staticSignature();
    const isStatic = sig !== null && !changed && records === 0 && verdictFrame === frame - 1
      && sig === verdictSignature && started === 0 && inFlight.size === 0;
    changed = false;
    verdictFrame = sig === null ? null : frame;
    verdictSignature = sig;
    return isStatic;
  };

  window.__renderdShim = {
    errors,
    freeGsapRunning,
    // Jump the runtime to t (callbacks on the way fire, as in a render's seek) and say whether
    // that started free GSAP tweens: a deck whose slides start their entrances later than at
    // load. null: no GSAP or no runtime, nothing done. Leaves the page unfit to capture from.
    freeGsapAfterJump(t) {
      const p = hfPlayer();
      if (!window.gsap || !p) return null;
      unproven();
      try {
        p.renderSeek(t);
      } catch (e) {
        return false;  // the render's own seek there reports it, with the frame
      }
      return freeGsapRunning();
    },
    // How many will-change layers the page has (0: nothing to anchor).
    rasterLayers() {
      return rasterTracked().length;
    },
    // For each frame in [from, to): which will-change layers are drawn, one "0"/"1" per layer in
    // document order. Reading styles at another frame counts as drawing it (a layer read hidden
    // is rasterised again at the next paint), so this runs in a page that captures nothing.
    async rasterBits(from, to, num, den) {
      const tracked = rasterTracked();
      const out = [];
      try {
        for (let k = from; k < to; k++) {
          await stateAt((k * den) / num, k);
          out.push(tracked.map((el) => (rasterDrawn(el) ? "1" : "0")).join(""));
        }
      } finally {
        settleTransitions();
      }
      return out;
    },
    // Drop the raster of the layers in `anchors` ([layer index, frame, keepIfDrawn] triples;
    // layers as counted by rasterLayers, which must still be `count`; keepIfDrawn: left alone if
    // the page drew it last paint), then paint once without them. Returns the frames, ascending,
    // to show with releaseRasters(frame) before each; null if the page's layers are not the ones
    // counted.
    async tagRasters(anchors, count) {
      const tracked = rasterTracked();
      if (tracked.length !== count) return null;
      if (!anchors.length) return [];
      if (!flatStyle) {
        flatStyle = document.createElement("style");
        flatStyle.textContent = `[${ANCHOR}] { will-change: auto !important; }`;
        (document.head || document.documentElement).appendChild(flatStyle);
      }
      const frames = new Set();
      for (const [i, frame, keepIfDrawn] of anchors) {
        if (keepIfDrawn && rasterDrawn(tracked[i])) continue;
        tracked[i].setAttribute(ANCHOR, String(frame));
        frames.add(frame);
      }
      if (frames.size) await settle(2);
      return [...frames].sort((x, y) => x - y);
    },
    // Give the layers tagged for `frame` their will-change back: the next paint rasterises them.
    releaseRasters(frame) {
      for (const el of document.querySelectorAll(`[${ANCHOR}="${frame}"]`)) el.removeAttribute(ANCHOR);
    },
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
        const p = hfPlayer();
        Object.assign(info, {
          kind: "hyperframes", compositionId: id, runtime: !!p,
          timelineRegistered: !!(tl && typeof tl.totalTime === "function"),
          timelineDuration: p ? p.getDuration() : tl && typeof tl.duration === "function" ? tl.duration() : null,
          subCompositionsEnd: hostsEnd(),
        });
      }
      const dataRoot = root || document.querySelector("[data-duration],[data-width]");
      if (dataRoot && info.kind !== "hook") {
        info.width = num(dataRoot.getAttribute("data-width"));
        info.height = num(dataRoot.getAttribute("data-height"));
        info.fps = dataRoot.getAttribute("data-fps");
        // As written, so an unfilled template value is named in the error, not as NaN.
        const d = dataRoot.getAttribute("data-duration");
        info.duration = d === null || d.trim() === "" ? null : d.trim();
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
    // After the page jumped to a frame its last one did not lead to: the transitions in flight
    // started from the old position; a sequential pass would have none of them.
    settleTransitions,
    // Set this document's clock (and its iframes') to t and run its queued rAF callbacks.
    tick(t, frame) {
      setClock(t, frame);
      flushRAF();
    },
    // Show composition time t (seconds) for absolute frame `frame`, then let it paint. Returns
    // [how many CSS transitions this seek started (the driver's priming looks for quiet spans),
    // whether the frame is static: provably as the frame before showed it (see staticVerdict)].
    // With `probe`, a static frame is not let paint: nothing changed to paint.
    async seek(t, frame, settleFrames, before, probe) {
      // Transitions in flight move to t before anything changes a style (see advanceTransitions).
      advanceTransitions(t);
      const p = hfPlayer();
      if (p) {
        // The runtime seeks clips, sub-compositions and every adapter (GSAP, CSS, WAAPI,
        // anime.js, Lottie, three.js) relative to their own starts, with the clock at the frame
        // before; only then does the clock move to t and queued rAF callbacks run, as in
        // HyperFrames' render. A tween that a timeline callback starts on GSAP's own ticker during
        // the seek (a slide deck's entrance) is then one tick along on its first frame; with the
        // clock moved first it was one frame behind HyperFrames' until it ended (startup-pitch).
        // `before` is the frame before's time in a sequential pass, not the time this page showed
        // last: a worker that jumped here must not see another clock than one that did not.
        nowMs = Math.max(0, Number(before) || 0) * 1000;
        reseed(frame);
        p.renderSeek(t);
        setClock(t, frame);
        flushRAF();
        if (typeof window.__hfWaitForSeekCompletion === "function") await window.__hfWaitForSeekCompletion();
        driveTransitions(t);
        // Videos show renderd's extracted frame for t (media_shim.js), after the runtime placed them.
        if (window.__renderdMedia) await window.__renderdMedia.apply(t);
        await mediaReady();
        const isStatic = staticVerdict(frame);
        // Nothing to draw: the driver reuses the frame before's picture, or settles and captures
        // this one to check that it may (settle(), below).
        if (!(probe && isStatic)) await settle(settleFrames);
        return [started, isStatic];
      }
      // A hook or plain timelines: rAF-driven content sees t before the seek, the order renderd
      // had from the start (HyperFrames does not render these pages).
      setClock(t, frame);
      flushRAF();
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
        if (isTransition(a)) {
          driveTransition(a, t);
        } else {
          a.pause();
          a.currentTime = t * 1000;
        }
      }
      await mediaReady();
      // Seek hooks and rAF-driven pages draw what their scripts like: never proven static.
      unproven();
      await settle(settleFrames);
      return [started, false];
    },
    // Let `n` animation frames pass (a frame reported static, then captured after all).
    settle,
    // From now on the driver draws the frames settle() would wait for (BeginFrame control).
    drawFramesManually() { manualFrames = true; },
  };
})();
