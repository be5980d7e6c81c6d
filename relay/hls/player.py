"""The player page: one self-contained HTML document that plays a playback id with hls.js.

hls.js is not in the repository: `make` fetches the pinned release from the npm registry into
`relay/hls/static/` (see HLS_JS_VERSION in the Makefile), and the wheel ships it as package
data. The page loads it from `/static/hls.min.js`, plays `/{PLAYBACK_ID}.m3u8` and falls back
to the browser's own HLS (Safari, iOS) when Media Source Extensions are missing.

For tests and monitoring the page exposes `window.relayPlayer = {hls, video}` (hls is null on
the native path) and mirrors its status on the `#status` element:
`data-state` is one of `loading`, `live`, `vod`, `error`; `data-latency` is the live latency
in seconds (hls.js `latency`, empty when unknown); `data-error` is the error in effect,
cleared once media flows again.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from urllib.parse import quote

STATIC_DIR = Path(__file__).parent / "static"

# The only files the static route serves, with their media types; anything else is a 404.
STATIC_MEDIA_TYPES: dict[str, str] = {
    "hls.min.js": "text/javascript; charset=utf-8",
    "hls.js.LICENSE": "text/plain; charset=utf-8",
}

# How often the page refreshes the latency it shows and writes to data-latency.
LATENCY_REFRESH_MS = 250
# After a fatal hls.js error: the wait before loading again, and the least time between two
# media-error recoveries (a second decode failure sooner than this ends playback).
RETRY_MS = 3000


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


def render_player_page(playback_id: str, *, token: str | None = None) -> str:
    """The HTML of the player page for `playback_id`; with `token` (the page's `?token=`,
    for a signed playback id), the playlist URL carries it.

    The id and the token are percent-encoded into the playlist URL and escaped for each
    context it appears in (HTML text, a JavaScript string), so even an id the route failed
    to validate cannot inject markup or script."""
    source = "/" + quote(playback_id, safe="") + ".m3u8"
    if token:
        source += "?token=" + quote(token, safe="")
    return _PAGE.format(
        title=html.escape(playback_id, quote=True),
        source=_script_json(source),
        refresh_ms=LATENCY_REFRESH_MS,
        retry_ms=RETRY_MS,
    )


_PAGE = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>{title} · Relay</title>
<style>
  html, body {{ margin: 0; height: 100%; background: #000; color: #ddd;
    font: 14px/1.4 system-ui, sans-serif; }}
  main {{ display: flex; flex-direction: column; height: 100%; }}
  video {{ flex: 1; min-height: 0; width: 100%; background: #000; }}
  #status {{ margin: 0; padding: 6px 10px; background: #111; white-space: nowrap;
    overflow: hidden; text-overflow: ellipsis; }}
  #status[data-state="live"]::before {{ content: "\\25CF "; color: #e33; }}
  #status[data-state="error"] {{ color: #f77; }}
</style>
</head>
<body>
<main>
<video id="video" controls autoplay muted playsinline></video>
<p id="status" data-state="loading" data-latency="" data-error="">Loading…</p>
</main>
<script src="/static/hls.min.js"></script>
<script>
"use strict";
(function () {{
  var source = {source};
  var video = document.getElementById("video");
  var status = document.getElementById("status");
  var hls = null;
  var kind = "loading";  // "live" or "vod" once a playlist has loaded
  var error = "";        // the error in effect; cleared when media flows again
  var note = "";         // not an error: e.g. autoplay was refused

  function latency() {{
    if (kind !== "live") return "";
    if (hls !== null) {{
      var l = hls.latency;
      return typeof l === "number" && isFinite(l) && l > 0 ? l.toFixed(2) : "";
    }}
    if (video.seekable.length === 0) return "";
    // Native HLS reports no latency; the distance to the live edge is the closest figure.
    var edge = video.seekable.end(video.seekable.length - 1);
    return Math.max(0, edge - video.currentTime).toFixed(2);
  }}

  function show() {{
    var state = error !== "" ? "error" : kind;
    var l = latency();
    var text = {{loading: "Loading…", live: "LIVE", vod: "VOD", error: "Error"}}[state];
    if (l !== "") text += " · latency " + l + " s";
    if (error !== "") text += " · " + error;
    else if (note !== "") text += " · " + note;
    status.dataset.state = state;
    status.dataset.latency = l;
    status.dataset.error = error;
    status.textContent = text;
  }}

  function play() {{
    var p = video.play();
    if (p !== undefined) p.catch(function () {{ note = "press play to start"; show(); }});
  }}

  video.addEventListener("error", function () {{
    var e = video.error;
    error = "media error " + (e ? e.code + (e.message ? " " + e.message : "") : "");
    show();
  }});
  video.addEventListener("playing", function () {{ note = ""; show(); }});

  if (typeof Hls !== "undefined" && Hls.isSupported()) {{
    // Up to 1.5x speed to catch up with the target latency after a late start or a stall
    // (hls.js's default, 1, never catches up).
    hls = new Hls({{lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5}});
    // Before any load, so that observers hooked on this assignment see every event.
    window.relayPlayer = {{hls: hls, video: video}};
    var lastRecovery = -Infinity;
    hls.on(Hls.Events.LEVEL_LOADED, function (_event, data) {{
      kind = data.details.live ? "live" : "vod";
      show();
    }});
    hls.on(Hls.Events.FRAG_BUFFERED, function () {{
      if (error !== "") {{ error = ""; show(); }}
    }});
    hls.on(Hls.Events.ERROR, function (_event, data) {{
      if (!data.fatal) return;
      error = data.type + " " + data.details;
      show();
      if (data.type === Hls.ErrorTypes.NETWORK_ERROR) {{
        // hls.js has spent its own retries. A stream that is not live yet, or whose
        // encoder reconnects, comes back: keep trying, slowly. Without a playlist only
        // loadSource fetches it again.
        setTimeout(function () {{
          if (hls.levels.length === 0) hls.loadSource(source); else hls.startLoad();
        }}, {retry_ms});
      }} else if (data.type === Hls.ErrorTypes.MEDIA_ERROR
                 && performance.now() - lastRecovery > {retry_ms}) {{
        lastRecovery = performance.now();
        hls.recoverMediaError();
      }} else {{
        hls.destroy();  // the error stays on screen
      }}
    }});
    hls.attachMedia(video);
    hls.loadSource(source);
    play();
  }} else if (video.canPlayType("application/vnd.apple.mpegurl")) {{
    window.relayPlayer = {{hls: null, video: video}};
    video.addEventListener("loadedmetadata", function () {{
      kind = video.duration === Infinity ? "live" : "vod";
      show();
    }});
    video.src = source;
    play();
  }} else {{
    window.relayPlayer = {{hls: null, video: video}};
    error = "this browser cannot play HLS (no Media Source Extensions, no native HLS)";
  }}

  setInterval(show, {refresh_ms});
  show();
}})();
</script>
</body>
</html>
"""
