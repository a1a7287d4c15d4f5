// renderd media shim: injected (after page_shim.js) into HyperFrames projects only.
// <video> pictures come from frames ffmpeg extracted at the render fps, shown in an <img>
// laid over each video, as HyperFrames' own videoFrameInjector does: what is captured then
// depends on the frame index alone, not on when Chrome's decoder delivers a frame.
(() => {
  if (window.__renderdMedia) return;
  const PLAN_URL = "/__renderd/media/plan.json";
  // HyperFrames' class for the replacement image: its runtime hands this image to WebGL
  // texture uploads in place of the <video>, so shader effects see the same frame.
  const FRAME_CLASS = "__render_frame__";
  // The properties HyperFrames copies from the <video> to its replacement image
  // (MEDIA_VISUAL_STYLE_PROPERTIES minus layout and opacity, which are set from the used box).
  const COPIED = [
    "object-fit", "object-position", "z-index", "filter", "mix-blend-mode", "backdrop-filter",
    "border-radius", "overflow", "clip-path", "mask", "mask-image", "mask-size", "mask-position",
    "mask-repeat", "transform", "transform-origin", "translate", "rotate", "scale", "box-sizing",
  ];
  let plan = null;
  let planLoading = null;

  const elements = () => Array.from(document.querySelectorAll("video, audio"));
  const strictNumber = (v) => {
    if (v === null || v === undefined || String(v).trim() === "") return null;
    const n = Number(v);
    return Number.isFinite(n) ? n : null;
  };
  const sourceUrl = (el) => {
    if (el.currentSrc) return el.currentSrc;
    if (el.getAttribute("src")) return el.src;
    const s = el.querySelector("source[src]");
    return s ? s.src : "";
  };
  const resolveStart = (el) => {
    if (typeof window.__hfResolveMediaStartSeconds === "function") {
      const v = Number(window.__hfResolveMediaStartSeconds(el));
      if (Number.isFinite(v)) return v;
    }
    return strictNumber(el.getAttribute("data-start")) || 0;
  };
  const describeElement = (el) => {
    const id = el.id ? ` id="${el.id}"` : "";
    const src = el.getAttribute("src");
    const host = el.closest("[data-composition-id]");
    const where = host ? ` in composition "${host.getAttribute("data-composition-id")}"` : "";
    return `<${el.tagName.toLowerCase()}${id}${!id && src ? ` src="${src}"` : ""}>${where}`;
  };
  // The end of the sub-composition slots an element sits in (it is not shown past them).
  const hostLimit = (el) => {
    let limit = null;
    for (let p = el.parentElement; p; p = p.parentElement) {
      if (!p.hasAttribute("data-composition-src")) continue;
      const d = strictNumber(p.getAttribute("data-duration"));
      if (d === null || d <= 0) continue;
      const end = resolveStart(p) + d;
      limit = limit === null ? end : Math.min(limit, end);
    }
    return limit;
  };
  // HyperFrames skips a video whose host is hidden: display:none anywhere above it, or a
  // sub-composition host hidden with visibility (a plain clip hidden that way still shows it).
  const ancestorHidden = (el) => {
    for (let p = el.parentElement; p && p !== document.documentElement; p = p.parentElement) {
      const cs = window.getComputedStyle(p);
      if (cs.display === "none") return true;
      if (cs.visibility === "hidden" && (p.hasAttribute("data-composition-src") || p.hasAttribute("data-composition-file"))) {
        return true;
      }
    }
    return false;
  };
  const hideNative = (el) => {
    el.style.setProperty("visibility", "hidden", "important");
    el.style.setProperty("pointer-events", "none", "important");
  };
  const overlayOf = (el, create) => {
    const next = el.nextElementSibling;
    if (next && next.classList.contains(FRAME_CLASS) && next.hasAttribute("data-renderd-frame")) return next;
    if (!create) return null;
    const img = document.createElement("img");
    img.classList.add(FRAME_CLASS);
    img.setAttribute("data-renderd-frame", "");
    img.alt = "";
    img.decoding = "sync";
    img.style.pointerEvents = "none";
    img.style.position = "absolute";
    img.style.setProperty("visibility", "hidden", "important");
    el.parentNode.insertBefore(img, el.nextSibling);
    return img;
  };

  async function loadPlan() {
    if (plan) return plan;
    if (!planLoading) {
      planLoading = fetch(PLAN_URL).then((r) => (r.ok ? r.json() : { videos: [] }));
    }
    plan = await planLoading;
    return plan;
  }

  // Place the overlay exactly over the video's used box, with its visual styles.
  function place(img, video) {
    const cs = window.getComputedStyle(video);
    for (const prop of COPIED) {
      const v = cs.getPropertyValue(prop);
      if (v) img.style.setProperty(prop, v);
    }
    const rect = video.getBoundingClientRect();
    img.style.position = "absolute";
    img.style.inset = "auto";
    img.style.right = "auto";
    img.style.bottom = "auto";
    img.style.left = `${Number.isFinite(video.offsetLeft) ? video.offsetLeft : 0}px`;
    img.style.top = `${Number.isFinite(video.offsetTop) ? video.offsetTop : 0}px`;
    img.style.width = `${video.offsetWidth > 0 ? video.offsetWidth : rect.width}px`;
    img.style.height = `${video.offsetHeight > 0 ? video.offsetHeight : rect.height}px`;
    const opacity = parseFloat(cs.opacity);
    img.style.opacity = String(Number.isNaN(opacity) ? 1 : opacity);
  }

  // Which extracted frame a video shows at time t (HyperFrames' FrameLookupTable rule), or null.
  function frameAt(v, t) {
    if (!(t >= v.start && t <= v.end)) return null;
    let local = t - v.start;
    if (v.loop && v.loopDuration > 0 && local >= v.loopDuration) local %= v.loopDuration;
    const k = Math.floor(local * v.rate * v.fps + 1e-9);
    // Past the source's end the server answers with its last frame (it clamps to what the
    // current render extracted: a warm page keeps the plan it read for an earlier chunk).
    return k < 0 ? null : k;
  }

  window.__renderdMedia = {
    // Every <video>/<audio> with its timing as the HyperFrames runtime resolves it.
    discover() {
      return elements().map((el, index) => {
        const start = resolveStart(el);
        const duration = strictNumber(el.getAttribute("data-duration"));
        const authoredStart = strictNumber(el.getAttribute("data-start"));
        const dataEnd = strictNumber(el.getAttribute("data-end"));
        let end = null;
        if (duration !== null && duration > 0) end = start + duration;
        else if (dataEnd !== null && authoredStart !== null && dataEnd > authoredStart) end = start + (dataEnd - authoredStart);
        const mediaStart = strictNumber(el.getAttribute("data-playback-start")) ?? strictNumber(el.getAttribute("data-media-start"));
        return {
          index,
          tag: el.tagName.toLowerCase(),
          element: describeElement(el),
          src: el.getAttribute("src") || (el.querySelector("source[src]") || { getAttribute: () => "" }).getAttribute("src"),
          url: sourceUrl(el),
          start,
          end,
          limit: hostLimit(el),
          mediaStart: mediaStart !== null && mediaStart >= 0 ? mediaStart : 0,
          playbackRate: strictNumber(el.getAttribute("data-playback-rate")),
          loop: el.hasAttribute("loop"),
          volume: strictNumber(el.getAttribute("data-volume")),
          hasAudio: el.getAttribute("data-has-audio"),
          muted: el.hasAttribute("muted") || !!el.muted,
        };
      });
    },
    // Show every video's frame for time t (called by the page shim after the runtime's seek).
    async apply(t) {
      const p = await loadPlan();
      if (!p.videos || p.videos.length === 0) return;
      const els = elements();
      const decodes = [];
      for (const v of p.videos) {
        const video = els[v.index];
        if (!video || (v.url && sourceUrl(video) !== v.url)) {
          // The plan was read from another page; a different element here would show wrong frames.
          throw new Error(`media element ${v.index} is not ${v.element} (${v.url}) in this page`);
        }
        hideNative(video);
        const k = frameAt(v, t);
        const img = overlayOf(video, k !== null);
        if (k === null || ancestorHidden(video)) {
          if (img) img.style.setProperty("visibility", "hidden", "important");
          continue;
        }
        place(img, video);
        const url = `${v.urlPrefix}${k}.${v.ext}`;
        if (img.getAttribute("src") !== url) {
          img.src = url;
          decodes.push(img.decode().catch(() => {}));
        }
        // Not !important, as HyperFrames: the runtime's own rules that hide a hidden clip's
        // contents still win over it.
        img.style.setProperty("visibility", "visible");
      }
      if (decodes.length) {
        await Promise.all(decodes);
        // WebGL/WebGPU scenes that sample a <video> as a texture drew during the runtime's seek,
        // before these frames were in place: the runtime's texture patch reads the decoded
        // sibling image, so have it re-run its seek handlers now (as HyperFrames' injector does).
        if (typeof window.__hfReseekGpu === "function") window.__hfReseekGpu(t);
      }
    },
  };
})();
