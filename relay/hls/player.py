"""The player page: one self-contained HTML document that plays a playback id with hls.js.

hls.js is not in the repository: `make` fetches the pinned release from the npm registry into
`relay/hls/static/` (see HLS_JS_VERSION in the Makefile), and the wheel ships it as package
data. The page loads it from `/static/hls.min.js`, plays `/{PLAYBACK_ID}.m3u8` and falls back
to the browser's own HLS (Safari, iOS) when Media Source Extensions are missing.

Images (relay/images): the video's `poster` is `/{ID}/thumbnail.jpg` (live: the newest
keyframe; an asset: its middle, Mux's default), and a seek bar under the video shows hover
previews from `/{ID}/storyboard.vtt`: the page parses the WebVTT, and the `#xywh=` tile of
the cue at the hovered time is shown as the CSS background of `#preview`. An asset's
storyboard is loaded once; a live one (the DVR window) again when it is older than
STORYBOARD_REFRESH_MS at a hover. A live storyboard's times are on the stream's media
timeline (its `tfdt`, from 0 at the stream's first segment), hls.js's `currentTime` is not:
hls.js reports the difference per discontinuity sequence (`INIT_PTS_FOUND`). Images of
signed ids need tokens of their own (audiences `t` and `s`): the page passes its
`?thumbnail_token=` to the poster and its `?storyboard_token=` to the storyboard (Mux
Player's `thumbnail-token` and `storyboard-token`); a page with `?token=` and without them
asks for no poster or no storyboard.

For tests and monitoring the page exposes `window.relayPlayer = {hls, video}` (hls is null on
the native path) and mirrors its status on the `#status` element:
`data-state` is one of `loading`, `live`, `vod`, `error`; `data-latency` is the live latency
in seconds (hls.js `latency`, empty when unknown); `data-duration` is an asset's duration in
seconds (empty while live or unknown); `data-error` is the error in effect, cleared once
media flows again. `#live` (the LIVE badge, hidden unless live) shows the latency too.
`#preview` carries `data-at` (the hovered time as currentTime), `data-time` (the same on the
storyboard's timeline) and `data-tile` (`x,y,w,h` of the tile shown, empty when none) while
it is shown.

Live, the page holds hls.js's `targetLatency` (PART-HOLD-BACK for LL-HLS) itself: it plays
slightly faster while it is behind that by more than a margin with a few parts buffered ahead,
and at 1 otherwise (CATCH_UP_* below say why hls.js's own catch-up is switched off). It never
changes a rate it did not set (the viewer's), and does nothing for an asset or natively.

The page has a Content-Security-Policy (a meta element): scripts are /static and the inline
script by its hash, the style by its hash, images, media and connections same-origin
(`blob:` for the MediaSource hls.js feeds, and hls.js's worker).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

from relay.hls.signed import TOKEN_PARAMETER

STATIC_DIR = Path(__file__).parent / "static"

# The only files the static route serves, with their media types; anything else is a 404.
STATIC_MEDIA_TYPES: dict[str, str] = {
    "hls.min.js": "text/javascript; charset=utf-8",
    "hls.js.LICENSE": "text/plain; charset=utf-8",
}

# The page's query parameters with the tokens of a signed id's images (Mux Player's
# thumbnail-token and storyboard-token attributes); `?token=` is the playback token.
THUMBNAIL_TOKEN_PARAMETER = "thumbnail_token"
STORYBOARD_TOKEN_PARAMETER = "storyboard_token"

# How often the page refreshes the latency it shows and writes to data-latency.
LATENCY_REFRESH_MS = 250
# After a fatal hls.js error: the wait before loading again, and the least time between two
# media-error recoveries (a second decode failure sooner than this ends playback).
RETRY_MS = 3000
# Live catch-up (see _SCRIPT's catchUp): hls.js's own controller is switched off
# (maxLiveSyncPlaybackRate 1) because it speeds up only while more than 1 s is buffered ahead
# of the playhead (hls.js 1.7 latency-controller.ts: `forwardBufferLength > 1`). At LL-HLS
# part targets the buffer ahead of a player at its target latency (PART-HOLD-BACK, 3 x
# PART-TARGET: 0.6 s at 0.2) is the target minus the distance from the buffered end to the
# live edge, well under 1 s, so hls.js stops catching up about 1 s + that distance behind,
# whatever its target. The page speeds up instead while the latency exceeds hls.js's
# targetLatency by more than CATCH_UP_MARGIN_S and more than CATCH_UP_MIN_BUFFER_PARTS parts
# are buffered ahead (so the faster playhead never runs dry: a stall would make hls.js raise
# its target by liveSyncOnStallIncrease, 1 s), and keeps going until the excess is gone.
CATCH_UP_MARGIN_S = 0.1
CATCH_UP_MIN_BUFFER_PARTS = 2
# The rate above 1 per second of excess latency (rounded up to 0.05 steps), and its cap:
# 0.5 s late plays at 1.15x, gently; the cap is the page's former hls.js setting.
CATCH_UP_RATE_PER_S = 0.25
CATCH_UP_MAX_RATE = 1.5
# A live storyboard (the DVR window moves) is fetched again at a hover once it is this old.
STORYBOARD_REFRESH_MS = 5000
# The most cues the page keeps from a storyboard WebVTT (Relay's have at most 100 tiles);
# a longer file is cut there rather than held whole.
STORYBOARD_MAX_CUES = 1000


def static_file(name: str) -> Path | None:
    """The path of a shipped static file, or None when `name` is not one or is not built.

    Only names in STATIC_MEDIA_TYPES resolve, so no request path can reach another file."""
    if name not in STATIC_MEDIA_TYPES:
        return None
    path = STATIC_DIR / name
    return path if path.is_file() else None


def _script_json(value: str) -> str:
    """`value` as a JavaScript string literal that is safe inside a <script> element.

    json.dumps escapes quotes, backslashes and (ensure_ascii) every non-ASCII character,
    U+2028/U+2029 included, but leaves `<`, `>` and `&`: escaping those too keeps
    `</script>` or `<!--` in the value from ending the element."""
    return (json.dumps(value, ensure_ascii=True)
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def render_player_page(playback_id: str, *, token: str | None = None,
                       thumbnail_token: str | None = None,
                       storyboard_token: str | None = None) -> str:
    """The HTML of the player page for `playback_id`. With `token` (the page's `?token=`,
    for a signed playback id), the playlist URL carries it; a signed id's images need tokens
    of their own audiences (Mux Player's `thumbnail-token` and `storyboard-token`): the
    poster is asked with `thumbnail_token` and the storyboard with `storyboard_token`, and
    without them a page with `token` asks for no poster or no storyboard.

    The id and the tokens are percent-encoded into the URLs and escaped for each context they
    appear in (HTML text and attributes, a JavaScript string), so even an id the route failed
    to validate cannot inject markup or script."""
    quoted = "/" + quote(playback_id, safe="")
    source = quoted + ".m3u8" + _token_query(token)
    poster = ""
    if thumbnail_token or not token:
        url = quoted + "/thumbnail.jpg" + _token_query(thumbnail_token)
        poster = f' poster="{html.escape(url, quote=True)}"'
    storyboard = ""
    if storyboard_token or not token:
        storyboard = quoted + "/storyboard.vtt" + _token_query(storyboard_token)
    script = _fill(_SCRIPT, source=_script_json(source), storyboard=_script_json(storyboard),
                   refresh_ms=str(LATENCY_REFRESH_MS), retry_ms=str(RETRY_MS),
                   storyboard_refresh_ms=str(STORYBOARD_REFRESH_MS),
                   max_cues=str(STORYBOARD_MAX_CUES),
                   catch_up_margin=repr(CATCH_UP_MARGIN_S),
                   catch_up_min_parts=repr(CATCH_UP_MIN_BUFFER_PARTS),
                   catch_up_gain=repr(CATCH_UP_RATE_PER_S),
                   catch_up_max_rate=repr(CATCH_UP_MAX_RATE))
    csp = ("default-src 'none'; "
           f"script-src 'self' '{_sha256(script)}'; style-src '{_sha256(_STYLE)}'; "
           "img-src 'self' data:; media-src 'self' blob:; connect-src 'self'; "
           "worker-src blob:; base-uri 'none'; form-action 'none'")
    return _fill(_PAGE, title=html.escape(playback_id, quote=True), csp=csp, poster=poster,
                 style=_STYLE, script=script)


def render_player_page_for(playback_id: str, params: Mapping[str, str]) -> str:
    """`render_player_page` with the tokens the page's query `params` carry (`token`,
    `thumbnail_token`, `storyboard_token`; empty ones count as absent)."""
    return render_player_page(
        playback_id, token=params.get(TOKEN_PARAMETER) or None,
        thumbnail_token=params.get(THUMBNAIL_TOKEN_PARAMETER) or None,
        storyboard_token=params.get(STORYBOARD_TOKEN_PARAMETER) or None)


def _token_query(token: str | None) -> str:
    return "?token=" + quote(token, safe="") if token else ""


def _sha256(text: str) -> str:
    """A CSP hash source for an inline element's text (CSP 3, "hash-source")."""
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def _fill(template: str, **values: str) -> str:
    """`template` with each `@name@` replaced in one pass (so a value that contains a
    placeholder's text stays as it is); every placeholder must have a value. (The templates
    hold JavaScript and CSS, whose braces str.format would need doubled.)"""
    return re.sub(r"@([a-z_]+)@", lambda match: values[match.group(1)], template)


_STYLE = """
  html, body { margin: 0; height: 100%; background: #000; color: #ddd;
    font: 14px/1.4 system-ui, sans-serif; }
  main { display: flex; flex-direction: column; height: 100%; }
  video { flex: 1; min-height: 0; width: 100%; background: #000; }
  #bar { position: relative; display: flex; align-items: center; gap: 10px;
    padding: 6px 10px; background: #111; }
  #live { padding: 1px 6px; border-radius: 3px; background: #c00; color: #fff;
    font-weight: bold; white-space: nowrap; }
  #live[hidden] { display: none; }
  #seek { position: relative; flex: 1; height: 14px; cursor: pointer; }
  #seek::before { content: ""; position: absolute; left: 0; right: 0; top: 5px; height: 4px;
    background: #444; }
  #played { position: absolute; left: 0; top: 5px; height: 4px; width: 0; background: #e33; }
  #time { white-space: nowrap; font-variant-numeric: tabular-nums; }
  #preview { position: absolute; bottom: 100%; margin-bottom: 4px; display: none;
    background-color: #222; background-repeat: no-repeat; border: 0; outline: 1px solid #888;
    pointer-events: none; min-width: 48px; min-height: 18px; }
  #preview-time { position: absolute; left: 0; right: 0; bottom: -22px; text-align: center;
    color: #fff; text-shadow: 0 0 2px #000; }
  #status { margin: 0; padding: 6px 10px; background: #111; white-space: nowrap;
    overflow: hidden; text-overflow: ellipsis; }
  #status[data-state="live"]::before { content: "\\25CF "; color: #e33; }
  #status[data-state="error"] { color: #f77; }
"""

_SCRIPT = """
"use strict";
(function () {
  var source = @source@;
  var storyboard = @storyboard@;  // the storyboard WebVTT's URL, "" when the page asks none
  var video = document.getElementById("video");
  var status = document.getElementById("status");
  var badge = document.getElementById("live");
  var seek = document.getElementById("seek");
  var played = document.getElementById("played");
  var preview = document.getElementById("preview");
  var previewTime = document.getElementById("preview-time");
  var timeText = document.getElementById("time");
  var hls = null;
  var kind = "loading";  // "live" or "vod" once a playlist has loaded
  var error = "";        // the error in effect; cleared when media flows again
  var note = "";         // not an error: e.g. autoplay was refused
  var details = null;    // the newest hls.js LevelDetails
  var offsets = {};      // discontinuity sequence -> media timeline minus currentTime (s)
  var lastOffset = 0;
  var cues = [];         // {start, end, url, x, y, w, h}, in time order
  var storyboardAt = -Infinity;  // performance.now() of the last storyboard request
  var storyboardLoads = 0;

  function latency() {
    if (kind !== "live") return "";
    if (hls !== null) {
      var l = hls.latency;
      return typeof l === "number" && isFinite(l) && l > 0 ? l.toFixed(2) : "";
    }
    if (video.seekable.length === 0) return "";
    // Native HLS reports no latency; the distance to the live edge is the closest figure.
    var edge = video.seekable.end(video.seekable.length - 1);
    return Math.max(0, edge - video.currentTime).toFixed(2);
  }

  function clock(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    var h = Math.floor(seconds / 3600), m = Math.floor(seconds / 60) % 60, s = seconds % 60;
    var ss = (s < 10 ? "0" : "") + s;
    return h > 0 ? h + ":" + (m < 10 ? "0" : "") + m + ":" + ss : m + ":" + ss;
  }

  // The seekable span of the seek bar in currentTime's terms, or null while unknown:
  // an asset's [0, duration], a live stream's DVR window.
  function span() {
    if (kind === "vod" && isFinite(video.duration) && video.duration > 0) {
      return [0, video.duration];
    }
    if (kind === "live" && video.seekable.length > 0) {
      var start = video.seekable.start(0), end = video.seekable.end(video.seekable.length - 1);
      return end > start ? [start, end] : null;
    }
    return null;
  }

  function show() {
    var state = error !== "" ? "error" : kind;
    var l = latency();
    var text = {loading: "Loading…", live: "LIVE", vod: "VOD", error: "Error"}[state];
    if (l !== "") text += " · latency " + l + " s";
    if (error !== "") text += " · " + error;
    else if (note !== "") text += " · " + note;
    var duration = kind === "vod" && isFinite(video.duration) && video.duration > 0
      ? video.duration.toFixed(3) : "";
    status.dataset.state = state;
    status.dataset.latency = l;
    status.dataset.duration = duration;
    status.dataset.error = error;
    status.textContent = text;
    badge.hidden = kind !== "live";
    badge.textContent = l !== "" ? "LIVE · " + l + " s" : "LIVE";
    timeText.textContent = duration !== ""
      ? clock(video.currentTime) + " / " + clock(video.duration) : "";
    var s = span();
    var f = s === null ? 0 : (video.currentTime - s[0]) / (s[1] - s[0]);
    played.style.width = (Math.min(1, Math.max(0, f)) * 100).toFixed(2) + "%";
  }

  function play() {
    var p = video.play();
    if (p !== undefined) p.catch(function () { note = "press play to start"; show(); });
  }

  // -- storyboard: WebVTT cues whose text is `URL#xywh=x,y,w,h` (Media Fragments URI 1.0) --

  function vttTime(text) {
    var m = /^(?:(\\d+):)?(\\d{2}):(\\d{2})\\.(\\d{3})$/.exec(text.trim());
    if (m === null) return NaN;
    return (m[1] ? +m[1] * 3600 : 0) + +m[2] * 60 + +m[3] + +m[4] / 1000;
  }

  function parseStoryboard(text, base) {
    var lines = text.split(/\\r\\n|\\r|\\n/);
    var found = [];
    for (var i = 0; i < lines.length - 1 && found.length < @max_cues@; i++) {
      var times = lines[i].split("-->");
      if (times.length !== 2) continue;
      var start = vttTime(times[0]), end = vttTime(times[1].trim().split(/\\s/)[0]);
      var m = /^(.+)#xywh=(\\d+),(\\d+),(\\d+),(\\d+)$/.exec(lines[i + 1].trim());
      if (!(end > start) || m === null) continue;
      var url;
      try { url = new URL(m[1], base); } catch (e) { continue; }
      // Only this server's sheets; the URL's serialisation is percent-encoded, so it cannot
      // end the CSS string it goes into.
      if (url.origin !== location.origin) continue;
      url.hash = "";
      // A live sheet changes with the window: a new URL per load, past the browser's cache
      // (the image routes ignore parameters they do not know, as Mux's do).
      if (kind === "live") url.searchParams.set("v", String(storyboardLoads));
      found.push({start: start, end: end, url: url.href,
                  x: +m[2], y: +m[3], w: +m[4], h: +m[5]});
    }
    found.sort(function (a, b) { return a.start - b.start; });
    return found;
  }

  function loadStoryboard() {
    if (storyboard === "") return;
    var age = performance.now() - storyboardAt;
    if (cues.length > 0 && (kind !== "live" || age < @storyboard_refresh_ms@)) return;
    if (age < @storyboard_refresh_ms@ / 5) return;  // one request in flight, or just failed
    storyboardAt = performance.now();
    var url = new URL(storyboard, location.href);
    fetch(url.href, {cache: "no-store"}).then(function (response) {
      if (!response.ok) throw new Error("storyboard.vtt: HTTP " + response.status);
      return response.text();
    }).then(function (text) {
      storyboardLoads += 1;
      cues = parseStoryboard(text, url.href);
    }).catch(function () {});  // no previews, and the time alone on hover
  }

  // Where `t` (currentTime) is on the storyboard's timeline: an asset's is currentTime; a
  // live stream's is its media timeline, offset per discontinuity sequence.
  function mediaTime(t) {
    if (kind !== "live") return t;
    var offset = lastOffset;
    if (details !== null) {
      for (var i = 0; i < details.fragments.length; i++) {
        var frag = details.fragments[i];
        if (frag.start <= t && t < frag.start + frag.duration
            && offsets[frag.cc] !== undefined) {
          offset = offsets[frag.cc];
          break;
        }
      }
    }
    return t + offset;
  }

  function cueAt(t) {
    for (var i = 0; i < cues.length; i++) {
      if (cues[i].start <= t + 1e-3 && t < cues[i].end) return cues[i];
    }
    return null;
  }

  function hovered(event) {
    var r = seek.getBoundingClientRect();
    var s = span();
    if (s === null || r.width <= 0) return null;
    var f = Math.min(1, Math.max(0, (event.clientX - r.left) / r.width));
    return s[0] + f * (s[1] - s[0]);
  }

  function showPreview(event) {
    var t = hovered(event);
    if (t === null) { hidePreview(); return; }
    loadStoryboard();
    var at = mediaTime(t);
    var cue = cueAt(at);
    if (cue !== null) {
      preview.style.backgroundImage = 'url("' + cue.url + '")';
      preview.style.backgroundPosition = -cue.x + "px " + -cue.y + "px";
      preview.style.width = cue.w + "px";
      preview.style.height = cue.h + "px";
      preview.dataset.tile = [cue.x, cue.y, cue.w, cue.h].join(",");
    } else {
      preview.style.backgroundImage = "none";
      preview.style.width = "";
      preview.style.height = "";
      preview.dataset.tile = "";
    }
    preview.dataset.time = at.toFixed(3);
    preview.dataset.at = t.toFixed(3);
    var s = span();
    previewTime.textContent = kind === "live" ? "-" + clock(s[1] - t) : clock(t);
    preview.style.display = "block";
    var bar = preview.parentElement.getBoundingClientRect();
    var width = preview.getBoundingClientRect().width;
    var left = event.clientX - bar.left - width / 2;
    preview.style.left = Math.max(0, Math.min(bar.width - width, left)) + "px";
  }

  function hidePreview() {
    preview.style.display = "none";
    preview.dataset.time = "";
    preview.dataset.at = "";
    preview.dataset.tile = "";
  }

  seek.addEventListener("pointermove", showPreview);
  seek.addEventListener("pointerenter", showPreview);
  seek.addEventListener("pointerleave", hidePreview);
  seek.addEventListener("click", function (event) {
    var t = hovered(event);
    if (t !== null) video.currentTime = t;
  });

  video.addEventListener("error", function () {
    var e = video.error;
    error = "media error " + (e ? e.code + (e.message ? " " + e.message : "") : "");
    show();
  });
  video.addEventListener("playing", function () { note = ""; show(); });
  video.addEventListener("durationchange", show);

  // -- live catch-up (hls.js path only; the constants are explained in player.py) --
  // hls.js's own controller is off (maxLiveSyncPlaybackRate: 1): it speeds up only while more
  // than 1 s is buffered ahead, which at LL-HLS part targets leaves the player about 1 s +
  // (live edge - buffered end) behind instead of at its targetLatency (PART-HOLD-BACK).
  // Here: faster while latency > targetLatency + margin and more than a few parts are
  // buffered ahead (never into a stall, which would raise hls.js's target by 1 s), until the
  // excess is gone; back to 1 otherwise. A rate this page did not set (the viewer's) is left
  // alone, and nothing happens for VOD, when paused or seeking, or far behind the edge (a
  // viewer who went back in the DVR window), as hls.js does (excess < target + TARGETDURATION).
  var ownRate = 1;       // the playbackRate this page set last
  var catchingUp = false;

  function bufferedAhead() {
    var t = video.currentTime, b = video.buffered;
    for (var i = 0; i < b.length; i++) {
      if (b.start(i) <= t + 0.1 && t < b.end(i)) return b.end(i) - t;
    }
    return 0;
  }

  function catchUp() {
    if (hls === null || details === null) return;
    var rate = video.playbackRate;
    if (rate !== 1 && rate !== ownRate) return;  // not ours: leave it
    var want = 1;
    var target = hls.targetLatency, l = hls.latency;
    if (details.live && !video.paused && !video.seeking && typeof target === "number"
        && target > 0 && typeof l === "number" && l > 0) {
      var excess = l - target;
      var part = details.partTarget > 0 ? details.partTarget : details.targetduration;
      if (excess > (catchingUp ? 0 : @catch_up_margin@) && excess < target + details.targetduration
          && bufferedAhead() > @catch_up_min_parts@ * part) {
        want = Math.min(@catch_up_max_rate@, 1 + Math.ceil(excess * @catch_up_gain@ * 20) / 20);
      }
    }
    catchingUp = want > 1;
    if (want !== rate) {
      ownRate = want;
      video.playbackRate = want;
    }
  }

  if (typeof Hls !== "undefined" && Hls.isSupported()) {
    // maxLiveSyncPlaybackRate 1 switches hls.js's own catch-up off; catchUp() does it.
    hls = new Hls({lowLatencyMode: true, maxLiveSyncPlaybackRate: 1});
    // Before any load, so that observers hooked on this assignment see every event.
    window.relayPlayer = {hls: hls, video: video};
    var lastRecovery = -Infinity;
    hls.on(Hls.Events.MEDIA_ATTACHED, function () {
      // hls.js's latency controller hooks timeupdate on MEDIA_ATTACHED too, and earlier (it
      // registered first), so hls.latency is fresh when catchUp runs. Adding the same
      // listener again after recoverMediaError is a no-op.
      video.addEventListener("timeupdate", catchUp);
    });
    hls.on(Hls.Events.LEVEL_LOADED, function (_event, data) {
      var first = kind === "loading";
      details = data.details;
      kind = data.details.live ? "live" : "vod";
      if (first) loadStoryboard();
      show();
    });
    hls.on(Hls.Events.INIT_PTS_FOUND, function (_event, data) {
      // currentTime = media time - initPTS / timescale (hls.js places the fragment's first
      // decode time at its start in the playlist).
      if (data.timescale > 0 && isFinite(data.initPTS)) {
        lastOffset = data.initPTS / data.timescale;
        offsets[data.frag.cc] = lastOffset;
      }
    });
    hls.on(Hls.Events.FRAG_BUFFERED, function () {
      if (error !== "") { error = ""; show(); }
    });
    hls.on(Hls.Events.ERROR, function (_event, data) {
      if (!data.fatal) return;
      error = data.type + " " + data.details;
      show();
      if (data.type === Hls.ErrorTypes.NETWORK_ERROR) {
        // hls.js has spent its own retries. A stream that is not live yet, or whose
        // encoder reconnects, comes back: keep trying, slowly. Without a playlist only
        // loadSource fetches it again.
        setTimeout(function () {
          if (hls.levels.length === 0) hls.loadSource(source); else hls.startLoad();
        }, @retry_ms@);
      } else if (data.type === Hls.ErrorTypes.MEDIA_ERROR
                 && performance.now() - lastRecovery > @retry_ms@) {
        lastRecovery = performance.now();
        hls.recoverMediaError();
      } else {
        hls.destroy();  // the error stays on screen
      }
    });
    hls.attachMedia(video);
    hls.loadSource(source);
    play();
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    window.relayPlayer = {hls: null, video: video};
    video.addEventListener("loadedmetadata", function () {
      var first = kind === "loading";
      kind = video.duration === Infinity ? "live" : "vod";
      if (first) loadStoryboard();
      show();
    });
    video.src = source;
    play();
  } else {
    window.relayPlayer = {hls: null, video: video};
    error = "this browser cannot play HLS (no Media Source Extensions, no native HLS)";
  }

  setInterval(show, @refresh_ms@);
  show();
})();
"""

_PAGE = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="@csp@">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>@title@ · Relay</title>
<style>@style@</style>
</head>
<body>
<main>
<video id="video" controls autoplay muted playsinline@poster@></video>
<div id="bar">
<span id="live" hidden>LIVE</span>
<div id="seek"><div id="played"></div></div>
<span id="time"></span>
<div id="preview" data-time="" data-at="" data-tile=""><span id="preview-time"></span></div>
</div>
<p id="status" data-state="loading" data-latency="" data-duration="" data-error="">Loading…</p>
</main>
<script src="/static/hls.min.js"></script>
<script>@script@</script>
</body>
</html>
"""
